// Package atomicfile replaces a file so that a concurrent reader sees either
// the old or the new content, never a partial one.
//
// The agent writes two files other processes read while it runs: subnet.env,
// which the CNI plugin parses on every ADD, and the conflist the kubelet
// watches. Both go through Write, so the writer is its own package rather than
// part of subnetenv (the conflist is not subnet.env) or of agent (the
// subnetenv package, which the CNI binary links, must not import the agent).
//
// Invariants:
//   - Standard library only.
//   - The file's mode is the perm passed to Write, whatever the umask.
package atomicfile
