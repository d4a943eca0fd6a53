package vmbus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// Status is a hypercall status, what posting one message returns
// (HV_STATUS_*, docs/vmbus.md).
type Status uint32

// Post statuses.
const (
	StatusSuccess             Status = 0
	StatusInsufficientMemory  Status = 11
	StatusInvalidConnectionID Status = 18
	StatusInsufficientBuffers Status = 19
)

// The seed's retry policy and pagewire's reply bound.
const (
	postTries            = 100
	postFirstDelay       = time.Microsecond
	postDelayDoubleBelow = 256 * time.Millisecond // 256,000 µs
	defaultReplyTimeout  = 10 * time.Second
)

// Post errors, the seed's mapping of statuses (docs/vmbus.md).
var (
	// ErrPostAgain is -EAGAIN: INVALID_CONNECTION_ID on the last try.
	ErrPostAgain = errors.New("vmbus: post message: invalid connection id (EAGAIN)")
	// ErrPostNoMem is -ENOMEM: INSUFFICIENT_MEMORY or INSUFFICIENT_BUFFERS
	// on the last try.
	ErrPostNoMem = errors.New("vmbus: post message: insufficient memory or buffers (ENOMEM)")
	// ErrPostFailed is -EINVAL: any other status, not retried.
	ErrPostFailed = errors.New("vmbus: post message failed (EINVAL)")
)

// postRetry calls try until it succeeds, fails for good or has been
// called 100 times, as the seed's vmbus_post_msg: after each transient
// failure it sleeps 1 µs, then twice as long each time while the delay is
// below 256,000 µs (so at most 262,144 µs). sleep returns early with
// ctx's error.
func postRetry(ctx context.Context, try func() (Status, error), sleep func(context.Context, time.Duration) error) error {
	delay := postFirstDelay
	var last error
	for range postTries {
		st, err := try()
		if err != nil {
			return err
		}
		switch st {
		case StatusSuccess:
			return nil
		case StatusInvalidConnectionID:
			last = ErrPostAgain
		case StatusInsufficientMemory, StatusInsufficientBuffers:
			last = ErrPostNoMem
		default:
			return fmt.Errorf("%w: status %d", ErrPostFailed, st)
		}
		if err := sleep(ctx, delay); err != nil {
			return fmt.Errorf("%w (gave up waiting: %v)", last, err)
		}
		if delay < postDelayDoubleBelow {
			delay *= 2
		}
	}
	return last
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// socketStatus maps a control socket send error to a post status: a
// socket out of buffers is the hypercall's INSUFFICIENT_BUFFERS and is
// retried; a peer that hung up is ErrPeerGone; anything else fails.
func socketStatus(err error) (Status, error) {
	switch {
	case err == nil:
		return StatusSuccess, nil
	case errors.Is(err, unix.ENOBUFS), errors.Is(err, unix.ENOMEM), errors.Is(err, unix.EAGAIN):
		return StatusInsufficientBuffers, nil
	case errors.Is(err, unix.EPIPE), errors.Is(err, unix.ECONNRESET), errors.Is(err, net.ErrClosed):
		return 0, fmt.Errorf("%w: %v", ErrPeerGone, err)
	default:
		return 0, fmt.Errorf("%w: %v", ErrPostFailed, err)
	}
}
