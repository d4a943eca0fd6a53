package goplugin

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// plane is the plugin's end of the host's data-plane socket.
type plane struct {
	mu  sync.Mutex
	ctl *net.UnixConn
}

var (
	planeOnce sync.Once
	thePlane  *plane
)

// getPlane returns the data plane the host passed, or nil.
func getPlane() *plane {
	planeOnce.Do(func() {
		v := os.Getenv(PlaneEnv)
		if v == "" {
			return
		}
		os.Unsetenv(PlaneEnv)
		fd, err := strconv.Atoi(v)
		var st syscall.Stat_t
		if err != nil || fd < 3 || syscall.Fstat(fd, &st) != nil || st.Mode&syscall.S_IFMT != syscall.S_IFSOCK {
			slog.Debug("no data plane", PlaneEnv, v)
			return
		}
		syscall.CloseOnExec(fd)
		if uc := UnixConn(fd); uc != nil {
			thePlane = &plane{ctl: uc}
		}
	})
	return thePlane
}

// UnixConn turns a unix socket descriptor into a *net.UnixConn, taking
// the descriptor; nil if it is not one. Both ends of the data plane use it.
func UnixConn(fd int) *net.UnixConn {
	f := os.NewFile(uintptr(fd), "pagewire-plane")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil
	}
	return uc
}

// attach takes the region and socket the host sent for token and starts
// serving the channel's requests on it.
func (c *channel) attach(p *plane, token uint64, half int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b [8]byte
	oob := make([]byte, syscall.CmsgSpace(2*4))
	p.ctl.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		n, oobn, _, _, err := p.ctl.ReadMsgUnix(b[:], oob)
		if err != nil {
			return fmt.Errorf("data plane: %w", err)
		}
		var fds []int
		if cms, err := syscall.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, cm := range cms {
				if r, err := syscall.ParseUnixRights(&cm); err == nil {
					fds = append(fds, r...)
				}
			}
		}
		got := binary.LittleEndian.Uint64(b[:])
		if n != 8 || len(fds) != 2 || got != token {
			for _, fd := range fds {
				syscall.Close(fd)
			}
			if n == 8 && got < token {
				continue // left over from an Open that failed
			}
			return fmt.Errorf("data plane: message for token %d (%d bytes, %d descriptors), want %d", got, n, len(fds), token)
		}
		defer syscall.Close(fds[0])
		var st syscall.Stat_t
		if err := syscall.Fstat(fds[0], &st); err != nil || st.Size != int64(2*half) {
			syscall.Close(fds[1])
			return fmt.Errorf("data plane: region of %d bytes, want %d", st.Size, 2*half)
		}
		shm, err := syscall.Mmap(fds[0], 0, 2*half, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
		if err != nil {
			syscall.Close(fds[1])
			return fmt.Errorf("data plane: %w", err)
		}
		conn := UnixConn(fds[1])
		if conn == nil {
			syscall.Munmap(shm)
			return fmt.Errorf("data plane: descriptor %d is no unix socket", fds[1])
		}
		c.shm, c.half, c.conn = shm, half, conn
		go c.loop(conn)
		return nil
	}
}

// loop answers the channel's requests until the host closes the socket
// (or Close does).
func (c *channel) loop(conn *net.UnixConn) {
	defer conn.Close()
	req := make([]byte, PlaneRequestSize+1)
	resp := make([]byte, PlaneResponseSize+PlaneMaxText)
	for {
		n, err := conn.Read(req)
		if err != nil {
			return
		}
		if _, err := conn.Write(c.serve(req[:n], resp)); err != nil {
			return
		}
	}
}

// detach ends the channel's data plane; c.mu is held.
func (c *channel) detach() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
	if c.shm != nil {
		syscall.Munmap(c.shm)
		c.shm = nil
	}
}
