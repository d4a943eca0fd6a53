package goplugin_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/go-plugin"
	"go.uber.org/goleak"

	"github.com/pagewire/pagewire/goplugin"
	"github.com/pagewire/pagewire/internal/gpproto"
	"github.com/pagewire/pagewire/plugins/nocomp"
	sdkgoplugin "github.com/pagewire/pagewire/sdk/goplugin"
)

// bins are the go-plugin binaries built for the tests, by method; wasms
// the Wasm modules.
var (
	bins  = map[string]string{}
	wasms = map[string]string{}
)

// modeEnv makes the test binary something else when it is re-executed:
// a plugin of another protocol version, a binary that is not a plugin,
// or a host that loads a plugin and exits (see helperMain).
const modeEnv = "PAGEWIRE_GOPLUGIN_TEST_MODE"

// The environment of mode plugin-spawn (see spawnChild).
const (
	spawnPIDEnv   = "PAGEWIRE_GOPLUGIN_TEST_CHILD_PID_FILE"
	spawnStdioEnv = "PAGEWIRE_GOPLUGIN_TEST_CHILD_STDIO"
	spawnV2Env    = "PAGEWIRE_GOPLUGIN_TEST_CHILD_V2"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(modeEnv); mode != "" {
		helperMain(mode)
		return
	}
	dir, err := os.MkdirTemp("", "pagewire-goplugin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// The binaries are named pw-NAME so that errors naming the plugin
	// file are told apart from the method's name.
	builds := map[string]string{
		"nocomp": "../plugins/nocomp/plugin", "zlib": "../plugins/zlib/plugin",
		"zstd": "../plugins/zstd/plugin", "lz4": "../plugins/lz4/plugin",
		"rle": "../examples/goplugin-go",
	}
	for name, pkg := range builds {
		out := filepath.Join(dir, "pw-"+name)
		if b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", name, err, b)
			os.Exit(1)
		}
		bins[name] = out
	}
	out := filepath.Join(dir, "zstd.wasm")
	cmd := exec.Command("go", "build", "-buildmode=c-shared", "-o", out, "../plugins/zstd/plugin")
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if b, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build zstd.wasm: %v\n%s", err, b)
		os.Exit(1)
	}
	wasms["zstd"] = out
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		// Every plugin client was killed; go-plugin's and gRPC's
		// goroutines end shortly after (goleak retries for a while).
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

func helperMain(mode string) {
	switch mode {
	case "plugin-v2": // a pagewire plugin that speaks only protocol v2
		hs := gpproto.Handshake
		hs.ProtocolVersion = 2
		plugin.Serve(&plugin.ServeConfig{
			HandshakeConfig:  hs,
			VersionedPlugins: map[int]plugin.PluginSet{2: {gpproto.PluginName: &gpproto.Plugin{Method: nocomp.New()}}},
			GRPCServer:       gpproto.NewGRPCServer,
		})
		os.Exit(0)
	case "plugin-spawn": // nocomp that starts a child first (see TestGroupEnds)
		spawnChild()
		sdkgoplugin.Serve(nocomp.New())
		os.Exit(0)
	case "not-plugin":
		fmt.Println("hello, I am not a plugin")
		os.Exit(0)
	case "host": // load PAGEWIRE_HOST_PLUGIN, print its pid, exit as told
		m, err := goplugin.Load(os.Getenv("PAGEWIRE_HOST_PLUGIN"), goplugin.Config{})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Println(m.Pid())
		os.Stdout.Sync()
		switch os.Getenv("PAGEWIRE_HOST_EXIT") {
		case "close": // the normal path: Close, then exit 0
			m.Close()
			os.Exit(0)
		case "normal": // exit 0 without Close
			os.Exit(0)
		case "error": // fail with exit 1 without Close
			fmt.Fprintln(os.Stderr, "host: failing on purpose")
			os.Exit(1)
		case "crash": // killed: wait for the test's SIGKILL
			time.Sleep(time.Minute)
		}
		os.Exit(0)
	}
	fmt.Fprintf(os.Stderr, "unknown %s %q\n", modeEnv, mode)
	os.Exit(2)
}

// spawnChild starts `sleep 300` and writes its pid to the file named by
// spawnPIDEnv; with spawnStdioEnv set the child shares the plugin's
// stdout and stderr (go-plugin's pipes). With spawnV2Env set the plugin
// then speaks only protocol v2 (so Load fails after it started).
func spawnChild() {
	child := exec.Command("sleep", "300")
	if os.Getenv(spawnStdioEnv) != "" {
		child.Stdout, child.Stderr = os.Stdout, os.Stderr
	}
	if err := child.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err := os.WriteFile(os.Getenv(spawnPIDEnv), []byte(strconv.Itoa(child.Process.Pid)), 0o600); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if os.Getenv(spawnV2Env) != "" {
		helperMain("plugin-v2")
	}
}

// load loads the go-plugin build of a method and closes it when t ends.
func load(t testing.TB, name string, cfg goplugin.Config) *goplugin.Method {
	t.Helper()
	m, err := goplugin.Load(bins[name], cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

var _ = strconv.Itoa
