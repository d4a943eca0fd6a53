//go:build !linux

package channels

import "net"

const notSentLowatSupported = false

func setNotSentLowat(*net.TCPConn, int) error { return nil }

func setReadBuffer(uintptr, int) error { return nil }
