package goplugin

import (
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/pagewire/pagewire/internal/gpproto"
	"github.com/pagewire/pagewire/sdk"
)

// Serve serves m as a go-plugin plugin over gRPC and never returns: the
// process exits when the host kills it, closes the connection, or exits
// itself. Call it from main; run by hand (without the host's handshake
// cookie) the binary says it is a plugin and exits 1.
//
// The method's log/slog and log output goes to the host's log (as
// go-plugin JSON log lines on the original stderr); what it writes to
// stdout and stderr is forwarded to the host's log too.
func Serve(m sdk.Method) {
	stderr := os.Stderr // go-plugin replaces os.Stderr; logs go to the original
	h := slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug, ReplaceAttr: hclogKeys})
	slog.SetDefault(slog.New(h))
	go watchParent()
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: gpproto.Handshake,
		VersionedPlugins: map[int]plugin.PluginSet{
			gpproto.ProtocolVersion: {gpproto.PluginName: &gpproto.Plugin{Method: m}},
		},
		GRPCServer: gpproto.NewGRPCServer,
		Logger: hclog.New(&hclog.LoggerOptions{
			Name: "go-plugin", Level: hclog.Info, Output: stderr, JSONFormat: true,
		}),
	})
	os.Exit(0)
}

// hclogKeys renames slog's JSON keys to go-plugin's (hclog's), so the host
// parses the level and message of every line.
func hclogKeys(groups []string, a slog.Attr) slog.Attr {
	if len(groups) > 0 {
		return a
	}
	switch a.Key {
	case slog.TimeKey:
		return slog.Attr{} // the host stamps the line
	case slog.LevelKey:
		return slog.String("@level", strings.ToLower(a.Value.String()))
	case slog.MessageKey:
		return slog.Attr{Key: "@message", Value: a.Value}
	}
	return a
}

// watchParent exits when the host process is gone (the plugin is
// reparented), so no plugin outlives a host that died without killing it.
func watchParent() {
	ppid := os.Getppid()
	for {
		time.Sleep(200 * time.Millisecond)
		if os.Getppid() != ppid {
			os.Exit(3)
		}
	}
}
