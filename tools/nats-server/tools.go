//go:build tools

// Package tools pins the NATS server that the JetStream sequencer runs on: the project builds
// it from this module (`go build github.com/nats-io/nats-server/v2`), so go.sum fixes its code.
package tools

import _ "github.com/nats-io/nats-server/v2"
