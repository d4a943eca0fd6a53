package core

import (
	"fmt"
	"slices"
	"sync"

	"github.com/pagewire/pagewire/internal/engine"
	"github.com/pagewire/pagewire/sdk"
)

// Registry maps method names to methods. It is safe for concurrent use.
// A new one is empty: package core links no codec (package
// plugins/builtin has pagewire's).
type Registry struct {
	mu      sync.RWMutex
	methods map[string]sdk.Method
}

// Nocomp is the method that sends pages as they are, QEMU's "none". It
// needs no codec, so the engine always has it: it is a [SenderConfig]'s
// default method, and a receiver without a registry accepts it.
func Nocomp() sdk.Method { return engine.Nocomp() }

// NewRegistry returns a registry holding ms.
func NewRegistry(ms ...sdk.Method) *Registry {
	r := &Registry{methods: make(map[string]sdk.Method)}
	for _, m := range ms {
		if err := r.Register(m); err != nil {
			panic(err)
		}
	}
	return r
}

// Register adds m. A name or wire flag already taken is an error.
func (r *Registry) Register(m sdk.Method) error {
	info := m.Info()
	if err := info.Check(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, o := range r.methods {
		if name == info.Name {
			return fmt.Errorf("method %q is already registered", name)
		}
		if o.Info().Flag == info.Flag {
			return fmt.Errorf("method %q: wire flag %#x is already taken by %q", info.Name, info.Flag, name)
		}
	}
	r.methods[info.Name] = m
	return nil
}

// Lookup returns the method called name; "none" (QEMU's name) is nocomp.
func (r *Registry) Lookup(name string) (sdk.Method, error) {
	if name == "none" {
		name = "nocomp"
	}
	r.mu.RLock()
	m, ok := r.methods[name]
	r.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("unknown method %q (have %v)", name, r.Names())
	}
	return m, nil
}

// Names lists the registered methods, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := make([]string, 0, len(r.methods))
	for n := range r.methods {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}
