package gpproto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
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
func (c *channel) attach(p *plane, token uint64, half int, populate bool) error {
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
		// A sender's region is populated (as the host does): every
		// packet goes through it, so its page faults are taken here, at
		// setup, not during the first packets.
		flags := syscall.MAP_SHARED
		if populate {
			flags |= syscall.MAP_POPULATE
		}
		shm, err := syscall.Mmap(fds[0], 0, 2*half, syscall.PROT_READ|syscall.PROT_WRITE, flags)
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
	defer func() {
		// The host hung up, with or without closing the channel: the
		// region and the shared mappings go now.
		c.mu.Lock()
		c.detach()
		c.mu.Unlock()
	}()
	defer conn.Close()
	req := make([]byte, PlaneMapSize+1)
	oob := make([]byte, syscall.CmsgSpace(4*4))
	resp := make([]byte, PlaneResponseSize+PlaneMaxText)
	for {
		n, oobn, _, _, err := conn.ReadMsgUnix(req, oob)
		if err != nil {
			return
		}
		fd := -1
		if oobn > 0 {
			fd = takeFD(oob[:oobn])
		}
		if _, err := conn.Write(c.serve(req[:n], fd, resp)); err != nil {
			return
		}
	}
}

// takeFD returns the one descriptor a message carried, or -1 (then all
// it carried, if any, are closed).
func takeFD(oob []byte) int {
	var fds []int
	if cms, err := syscall.ParseSocketControlMessage(oob); err == nil {
		for _, cm := range cms {
			if r, err := syscall.ParseUnixRights(&cm); err == nil {
				fds = append(fds, r...)
			}
		}
	}
	if len(fds) == 1 {
		return fds[0]
	}
	for _, fd := range fds {
		syscall.Close(fd)
	}
	return -1
}

func closeFD(fd int) { syscall.Close(fd) }

// mapShared maps size bytes of fd from off, read-only, as mapping id
// (PlaneMap); it takes fd.
func (c *channel) mapShared(id uint64, fd int, size, off uint64) error {
	if fd < 0 {
		return errors.New("data plane: map without a descriptor")
	}
	defer syscall.Close(fd)
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.shm == nil:
		return errors.New("data plane: channel closed")
	case c.snd == nil:
		return errors.New("data plane: shared memory on a channel not set up to send")
	case len(c.maps) >= PlaneMaxMaps:
		return fmt.Errorf("data plane: more than %d shared mappings", PlaneMaxMaps)
	case c.maps[id] != nil:
		return fmt.Errorf("data plane: shared mapping %d exists", id)
	case size == 0 || size > 1<<48 || off > 1<<62:
		return fmt.Errorf("data plane: shared mapping of %d bytes at %d", size, off)
	}
	// A file that can shrink could take pages away under the mapping:
	// the next read of them would kill this process (SIGBUS).
	if seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0); err != nil || seals&unix.F_SEAL_SHRINK == 0 {
		return errors.New("data plane: shared memory not sealed against shrinking")
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil || uint64(st.Size) < off || uint64(st.Size)-off < size {
		return fmt.Errorf("data plane: shared memory of %d bytes at %d, file of %d", size, off, st.Size)
	}
	mem, err := syscall.Mmap(fd, int64(off), int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("data plane: map shared memory: %w", err)
	}
	if c.maps == nil {
		c.maps = make(map[uint64][]byte)
	}
	c.maps[id] = mem
	return nil
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
	for id, mem := range c.maps {
		syscall.Munmap(mem)
		delete(c.maps, id)
	}
}
