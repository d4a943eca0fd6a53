package goplugin

import (
	"bytes"
	"context"
	"io"
	"log"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// slogger is an hclog.Logger that forwards to a slog.Logger: go-plugin
// logs through it, and so do the plugin's log lines (go-plugin parses
// them from the plugin's stderr and logs them through Named(binary)).
// go-plugin's own Info lines ("plugin process exited") are demoted to
// Debug; lines from the plugin keep their level.
type slogger struct {
	l      *slog.Logger
	name   string
	own    bool // go-plugin's own logger, not a plugin's
	args   []any
	plugin string
}

func newLogger(l *slog.Logger, plugin string) *slogger {
	return &slogger{l: l, own: true, plugin: plugin}
}

func toSlog(level hclog.Level) slog.Level {
	switch level {
	case hclog.Trace:
		return slog.LevelDebug - 4
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	}
	return slog.LevelInfo
}

func (s *slogger) Log(level hclog.Level, msg string, args ...any) {
	lv := toSlog(level)
	if s.own && lv == slog.LevelInfo {
		lv = slog.LevelDebug
	}
	ctx := context.Background()
	if !s.l.Enabled(ctx, lv) {
		return
	}
	all := make([]any, 0, 4+len(s.args)+len(args))
	all = append(all, "plugin", s.plugin)
	if s.name != "" && s.own {
		all = append(all, "logger", s.name)
	}
	all = append(all, s.args...)
	all = append(all, args...)
	s.l.Log(ctx, lv, msg, all...)
}

func (s *slogger) Trace(msg string, args ...any) { s.Log(hclog.Trace, msg, args...) }
func (s *slogger) Debug(msg string, args ...any) { s.Log(hclog.Debug, msg, args...) }
func (s *slogger) Info(msg string, args ...any)  { s.Log(hclog.Info, msg, args...) }
func (s *slogger) Warn(msg string, args ...any)  { s.Log(hclog.Warn, msg, args...) }
func (s *slogger) Error(msg string, args ...any) { s.Log(hclog.Error, msg, args...) }

func (s *slogger) enabled(l hclog.Level) bool { return s.l.Enabled(context.Background(), toSlog(l)) }
func (s *slogger) IsTrace() bool              { return s.enabled(hclog.Trace) }
func (s *slogger) IsDebug() bool              { return s.enabled(hclog.Debug) }
func (s *slogger) IsInfo() bool               { return s.enabled(hclog.Info) }
func (s *slogger) IsWarn() bool               { return s.enabled(hclog.Warn) }
func (s *slogger) IsError() bool              { return s.enabled(hclog.Error) }
func (s *slogger) ImpliedArgs() []any         { return s.args }

func (s *slogger) With(args ...any) hclog.Logger {
	c := *s
	c.args = append(append([]any(nil), s.args...), args...)
	return &c
}

func (s *slogger) Name() string { return s.name }

// Named is how go-plugin logs a plugin's own lines: they keep their level.
func (s *slogger) Named(name string) hclog.Logger {
	c := *s
	if c.name != "" {
		name = c.name + "." + name
	}
	c.name, c.own = name, false
	return &c
}

func (s *slogger) ResetNamed(name string) hclog.Logger {
	c := *s
	c.name, c.own = name, false
	return &c
}

func (s *slogger) SetLevel(hclog.Level) {}

// GetLevel is the lowest level the slog handler takes; go-plugin drops
// the plugin's lines below it without parsing them.
func (s *slogger) GetLevel() hclog.Level {
	for _, l := range []hclog.Level{hclog.Trace, hclog.Debug, hclog.Info, hclog.Warn, hclog.Error} {
		if s.enabled(l) {
			return l
		}
	}
	return hclog.Off
}

func (s *slogger) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(s.StandardWriter(opts), "", 0)
}

func (s *slogger) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return &lineWriter{log: func(line string) { s.Info(line) }}
}

// lineWriter calls log once per line written.
type lineWriter struct {
	log func(string)
	buf []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			if len(w.buf) > 4096 {
				w.log(string(w.buf))
				w.buf = w.buf[:0]
			}
			return len(p), nil
		}
		w.log(strings.TrimRight(string(w.buf[:i]), "\r"))
		w.buf = w.buf[i+1:]
	}
}
