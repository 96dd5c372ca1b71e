// Package iox holds small io helpers that several packages share.
package iox

import "io"

// CountingWriter writes to W and tells Progress, when set, of the bytes
// written through it so far.
type CountingWriter struct {
	W        io.Writer
	N        int64
	Progress func(int64)
}

func (c *CountingWriter) Write(b []byte) (int, error) {
	n, err := c.W.Write(b)
	c.N += int64(n)
	if c.Progress != nil {
		c.Progress(c.N)
	}
	return n, err
}
