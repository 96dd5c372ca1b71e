package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/strata-fs/strata/image"
)

// A board shows the layers of a pull or push as docker does: on a
// terminal one line per layer, redrawn in place, with its state, bytes
// and rate; elsewhere one line per layer as it completes. A delayed
// board (import, export, commit) draws only on a terminal, and only
// once the work has taken longer than its delay.
type board struct {
	w     io.Writer
	tty   bool
	quiet bool

	delay time.Duration // draw nothing before start+delay
	start time.Time
	timer *time.Timer

	mu     sync.Mutex
	rows   []*boardRow
	byID   map[int]*boardRow
	drawn  int // lines drawn last time
	last   time.Time
	closed bool
}

type boardRow struct {
	p     image.LayerProgress
	start time.Time
	from  int64 // bytes held when the transfer started, for the rate
	told  bool  // its completion was printed (no terminal)
}

func newBoard(w io.Writer, tty, quiet bool) *board {
	return &board{w: w, tty: tty, quiet: quiet, byID: map[int]*boardRow{}, start: time.Now()}
}

// delayed makes b silent for d from now: then it draws what it has been
// told so far, and goes on as any board. A board finished within d
// never draws; without a terminal a delayed board never draws.
func (b *board) delayed(d time.Duration) *board {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.tty {
		b.quiet = true
	}
	b.delay, b.start = d, time.Now()
	if !b.quiet {
		b.timer = time.AfterFunc(d, func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			if len(b.rows) > 0 {
				b.drawLocked()
			}
		})
	}
	return b
}

// waitingLocked reports whether a delayed board is still silent.
func (b *board) waitingLocked() bool {
	return b.drawn == 0 && time.Since(b.start) < b.delay
}

// reporter is b.update, or nil when b draws nothing: work with no
// board pays nothing for reports.
func (b *board) reporter() func(image.LayerProgress) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.quiet {
		return nil
	}
	return b.update
}

// update takes one report; Pull and Push call it from one goroutine at a time.
func (b *board) update(p image.LayerProgress) {
	if b.quiet {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.byID[p.Index]
	if r == nil {
		r = &boardRow{}
		b.byID[p.Index] = r
		b.rows = append(b.rows, r)
	}
	if moving(p.State) && r.p.State != p.State {
		r.start, r.from = time.Now(), p.Done
	}
	changed := r.p.State != p.State
	r.p = p
	if !b.tty {
		if p.State.Done() && !r.told {
			r.told = true
			fmt.Fprintln(b.w, r.line(false))
		}
		return
	}
	if b.waitingLocked() {
		return
	}
	if changed || time.Since(b.last) >= 100*time.Millisecond {
		b.drawLocked()
	}
}

// moving reports whether a layer in state s is moving bytes, with a
// bar and a rate.
func moving(s image.LayerState) bool {
	switch s {
	case image.Downloading, image.Pushing, image.Loading, image.Exporting, image.Committing:
		return true
	}
	return false
}

func (b *board) drawLocked() {
	if b.closed {
		return
	}
	var sb strings.Builder
	if b.drawn > 0 {
		fmt.Fprintf(&sb, "\x1b[%dA", b.drawn)
	}
	for _, r := range b.rows {
		sb.WriteString("\x1b[2K")
		sb.WriteString(r.line(true))
		sb.WriteByte('\n')
	}
	io.WriteString(b.w, sb.String())
	b.drawn = len(b.rows)
	b.last = time.Now()
}

// finish draws the final state.
func (b *board) finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.timer != nil {
		b.timer.Stop()
	}
	if b.tty && !b.quiet && len(b.rows) > 0 && !b.waitingLocked() {
		b.drawLocked()
	}
	b.closed = true
}

func (r *boardRow) line(bar bool) string {
	id := shortID(r.p.Digest.String(), false)
	if id == "" {
		id = "new layer" // a commit's, until it is written
	}
	switch {
	case moving(r.p.State):
		if !bar {
			return fmt.Sprintf("%s: %s", id, r.p.State)
		}
		rate := ""
		if el := time.Since(r.start).Seconds(); el > 0.2 {
			rate = "  " + humanSize(int64(float64(r.p.Done-r.from)/el)) + "/s"
		}
		if r.p.Total <= 0 { // a size not known yet: no bar
			return fmt.Sprintf("%s: %-17s %s%s", id, r.p.State, humanSize(r.p.Done), rate)
		}
		const width = 40
		frac := 0.0
		if r.p.Total > 0 {
			frac = float64(r.p.Done) / float64(r.p.Total)
		}
		frac = min(frac, 1)
		n := int(frac * width)
		arrow := ""
		if n < width {
			arrow = ">"
		}
		fill := strings.Repeat("=", n) + arrow + strings.Repeat(" ", max(0, width-n-len(arrow)))
		return fmt.Sprintf("%s: %-17s [%s] %s/%s%s", id, r.p.State, fill, humanSize(r.p.Done), humanSize(r.p.Total), rate)
	case r.p.State == image.Mounted:
		return fmt.Sprintf("%s: Mounted from %s", id, r.p.From)
	}
	return fmt.Sprintf("%s: %s", id, r.p.State)
}
