package channels

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

const notSentLowatSupported = true

func setNotSentLowat(c *net.TCPConn, bytes int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, bytes)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("TCP_NOTSENT_LOWAT %d: %w", bytes, serr)
	}
	return nil
}

func setReadBuffer(fd uintptr, bytes int) error {
	if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, bytes); err != nil {
		return fmt.Errorf("SO_RCVBUF %d: %w", bytes, err)
	}
	return nil
}
