package main

import (
	"io"
	"log/syslog"
)

// newSyslogWriter sends a background daemon's errors to syslog, as
// fuse-overlayfs does, since it has no terminal.
func newSyslogWriter() (io.Writer, error) {
	return syslog.New(syslog.LOG_DAEMON|syslog.LOG_WARNING, "strata-fuse")
}
