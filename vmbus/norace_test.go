//go:build !race

package vmbus_test

const raceEnabled = false
