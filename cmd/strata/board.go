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
// and rate; elsewhere one line per layer as it completes.
type board struct {
	w     io.Writer
	tty   bool
	quiet bool

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
	return &board{w: w, tty: tty, quiet: quiet, byID: map[int]*boardRow{}}
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
	moving := p.State == image.Downloading || p.State == image.Pushing
	if moving && r.p.State != p.State {
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
	if changed || time.Since(b.last) >= 100*time.Millisecond {
		b.drawLocked()
	}
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
	if b.tty && !b.quiet && len(b.rows) > 0 {
		b.drawLocked()
	}
	b.closed = true
}

func (r *boardRow) line(bar bool) string {
	id := shortID(r.p.Digest.String(), false)
	switch r.p.State {
	case image.Downloading, image.Pushing:
		if !bar {
			return fmt.Sprintf("%s: %s", id, r.p.State)
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
		rate := ""
		if el := time.Since(r.start).Seconds(); el > 0.2 {
			rate = "  " + humanSize(int64(float64(r.p.Done-r.from)/el)) + "/s"
		}
		return fmt.Sprintf("%s: %-17s [%s] %s/%s%s", id, r.p.State, fill, humanSize(r.p.Done), humanSize(r.p.Total), rate)
	case image.Mounted:
		return fmt.Sprintf("%s: Mounted from %s", id, r.p.From)
	}
	return fmt.Sprintf("%s: %s", id, r.p.State)
}
