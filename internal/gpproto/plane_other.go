//go:build !linux

package gpproto

import "errors"

type plane struct{}

func getPlane() *plane { return nil }

func (c *channel) attach(*plane, uint64, int, bool) error {
	return errors.New("data plane: Linux only")
}

func (c *channel) detach() {}

func closeFD(int) {}

func (c *channel) mapShared(uint64, int, uint64, uint64) error {
	return errors.New("data plane: Linux only")
}
