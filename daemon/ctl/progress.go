package ctl

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// isTerminal reports whether w is a character device (a TTY).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// startProgress draws a progress bar on w until the returned function is
// called: the share of the file read (when its size is known), rows sent and
// their rate.
func startProgress(w io.Writer, mode string, size int64, in *countingReader, im *importer, start time.Time) func() {
	if mode == "never" || (mode != "always" && !isTerminal(w)) {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	draw := func() {
		rows := im.rowsDone.Load()
		el := time.Since(start).Seconds()
		rate := 0.0
		if el > 0 {
			rate = float64(rows) / el
		}
		const width = 30
		line := ""
		if size > 0 {
			frac := min(float64(in.n.Load())/float64(size), 1)
			n := int(frac * width)
			eta := ""
			if frac > 0.01 && frac < 1 {
				eta = fmt.Sprintf("  ETA %s", time.Duration(el/frac*(1-frac)*float64(time.Second)).Round(time.Second))
			}
			line = fmt.Sprintf("[%s%s] %3.0f%%  %d rows  %.0f rows/s%s", strings.Repeat("#", n), strings.Repeat(".", width-n), frac*100, rows, rate, eta)
		} else {
			line = fmt.Sprintf("%d rows  %.0f rows/s", rows, rate)
		}
		fmt.Fprintf(w, "\r%-78s", line)
	}
	go func() {
		defer wg.Done()
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				draw()
				fmt.Fprintln(w)
				return
			case <-t.C:
				draw()
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}
