package channels_test

import (
	"context"
	"net"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/pagewire/pagewire/channels"
)

// TestNotSentLowat: a TCP connection NotSentLowat dials has
// TCP_NOTSENT_LOWAT set, and carries data.
func TestNotSentLowat(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Write([]byte("ok"))
			c.Close()
		}
	}()
	d, err := channels.NewDialer("tcp:" + ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c, err := channels.NotSentLowat(d, 96<<10).Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc, _ := c.(*net.TCPConn).SyscallConn()
	var v int
	var gerr error
	rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT) })
	if gerr != nil || v != 96<<10 {
		t.Fatalf("TCP_NOTSENT_LOWAT = %d, %v; want %d", v, gerr, 96<<10)
	}
	buf := make([]byte, 2)
	if _, err := c.Read(buf); err != nil || string(buf) != "ok" {
		t.Fatalf("read %q, %v", buf, err)
	}
}

// TestListenerReadBuffer: connections a listener accepts after
// ListenerReadBuffer have that receive buffer (the kernel doubles it).
func TestListenerReadBuffer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := channels.ListenerReadBuffer(ln, 128<<10); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	rc, _ := a.(*net.TCPConn).SyscallConn()
	var v int
	rc.Control(func(fd uintptr) { v, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF) })
	if v != 256<<10 {
		t.Fatalf("SO_RCVBUF of the accepted connection = %d, want %d", v, 256<<10)
	}
}
