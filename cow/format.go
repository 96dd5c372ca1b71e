//go:build linux

package cow

// The on-disk format of an overlay layer (whiteouts, opaque directories,
// redirects, metacopy files, origins) is read and written through package
// ovl; the engine writes the kernel's format where the upper can hold it
// (Stack.KernelFormat), the OCI and user.* fallbacks elsewhere.
