package auto

import (
	"bytes"
	"os"
	"strconv"
)

// schedstat returns the nanoseconds this process's threads have run on
// a CPU and have waited runnable for one, summed over its threads
// (/proc/self/task/*/schedstat), and whether the kernel told.
func (m *cpuMeter) schedstat() (run, wait int64, ok bool) {
	d, err := os.Open("/proc/self/task")
	if err != nil {
		return 0, 0, false
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return 0, 0, false
	}
	for _, n := range names {
		b, err := m.read("/proc/self/task/" + n + "/schedstat")
		if err != nil {
			continue // a thread that ended meanwhile
		}
		f := bytes.Fields(b)
		if len(f) < 2 {
			return 0, 0, false
		}
		r, err1 := strconv.ParseInt(string(f[0]), 10, 64)
		w, err2 := strconv.ParseInt(string(f[1]), 10, 64)
		if err1 != nil || err2 != nil {
			return 0, 0, false
		}
		run += r
		wait += w
	}
	return run, wait, len(names) > 0
}

func (m *cpuMeter) read(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if m.buf == nil {
		m.buf = make([]byte, 256)
	}
	n, err := f.Read(m.buf)
	return m.buf[:n], err
}
