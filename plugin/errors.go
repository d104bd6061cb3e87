package plugin

import (
	"fmt"

	"github.com/containernetworking/cni/pkg/types"
)

// Plugin-specific error codes (the CNI spec reserves 0-99). The spec's own
// codes are used where they fit: 6 undecodable config, 7 invalid config,
// 11 no subnet.env yet, 50 not ready (STATUS), 999 unexpected kernel or disk
// failures.
const (
	// CodeIPExhausted: every address of the node's range is reserved.
	CodeIPExhausted uint = 100
	// CodeIfNameExists: CNI_IFNAME already exists in the pod netns.
	CodeIfNameExists uint = 101
	// CodeAlreadyAttached: this (container, ifname) is attached already (its
	// veth exists): an ADD without a DEL in between.
	CodeAlreadyAttached uint = 102
	// CodeCheckFailed: CHECK found a difference from prevResult; the message
	// names the first one.
	CodeCheckFailed uint = 103
)

// cniErr builds the *types.Error a verb returns: skel prints it unchanged
// (a plain error would become code 999).
func cniErr(code uint, format string, args ...any) *types.Error {
	return types.NewError(code, fmt.Sprintf(format, args...), "")
}

// internal wraps an unexpected failure as code 999 with its context.
func internal(err error, format string, args ...any) *types.Error {
	return types.NewError(types.ErrInternal, fmt.Sprintf(format, args...)+": "+err.Error(), "")
}
