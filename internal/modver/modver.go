// Package modver reports the version of a Go module linked into the
// running binary, for messages that name the code doing the work.
package modver

import "runtime/debug"

// Of returns the version of module path in this binary's build
// information ("v1.20.4"), or "(devel)" when it is not known.
func Of(path string) string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == path {
				if d.Replace != nil {
					d = d.Replace
				}
				return d.Version
			}
		}
	}
	return "(devel)"
}
