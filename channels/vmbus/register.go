package vmbus

import (
	"net"

	"github.com/pagewire/pagewire/channels"
)

// Importing this package adds "vmbus:PATH" addresses to package channels.
func init() {
	channels.Register("vmbus", channels.Scheme{
		Listen: func(path string) (net.Listener, error) { return Listen(path, Config{}) },
		Dial:   func(path string) channels.Dialer { return NewDialer(path, Config{}) },
		Socket: "unixpacket",
	})
}
