// Command porcupine-kv checks a JSON history of kv operations for linearizability against a
// sequential model of Remora's kv application (get, put, copy, cas over many keys, so
// multi-partition operations are checked as one atomic step).
//
// Input (a file argument, or stdin):
//
//	{"operations": [{"client": 0, "call": 10, "return": 25,
//	                 "input": {"op": "copy", "from": "a", "to": "b"},
//	                 "output": "7"}]}
//
// Values, `expected` and outputs are JSON texts ("7", "null", "true"). An operation whose
// outcome is unknown (its client never heard back) has "pending": true: it may take effect at
// any time after its call, with any output.
//
// Exit status: 0 linearizable, 1 a violation (printed), 2 bad input or the check timed out.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

type input struct {
	Op       string `json:"op"`
	Key      string `json:"key"`
	From     string `json:"from"`
	To       string `json:"to"`
	Value    string `json:"value"`
	Expected string `json:"expected"`
}

type record struct {
	Client  int     `json:"client"`
	Call    int64   `json:"call"`
	Return  int64   `json:"return"`
	Input   input   `json:"input"`
	Output  *string `json:"output"`
	Pending bool    `json:"pending"`
}

type history struct {
	Operations []record `json:"operations"`
}

// state maps keys to JSON values; a missing key reads as null.
type state map[string]string

func (s state) with(key string, value *string) state {
	out := make(state, len(s)+1)
	for k, v := range s {
		out[k] = v
	}
	if value == nil {
		delete(out, key)
	} else {
		out[key] = *value
	}
	return out
}

func (s state) read(key string) string {
	if v, ok := s[key]; ok {
		return v
	}
	return "null"
}

// step applies one operation; ok reports whether `out` (nil: unknown) is what it returns.
func step(s state, in input, out *string) (bool, state) {
	matches := func(want string) bool { return out == nil || *out == want }
	switch in.Op {
	case "get":
		return matches(s.read(in.Key)), s
	case "put":
		v := in.Value
		return matches("null"), s.with(in.Key, &v)
	case "copy":
		if v, ok := s[in.From]; ok {
			return matches(v), s.with(in.To, &v)
		}
		return matches("null"), s.with(in.To, nil)
	case "cas":
		if s.read(in.Key) == in.Expected {
			v := in.Value
			return matches("true"), s.with(in.Key, &v)
		}
		return matches("false"), s
	}
	return false, s
}

func describe(in input, out *string) string {
	o := "?"
	if out != nil {
		o = *out
	}
	switch in.Op {
	case "get":
		return fmt.Sprintf("get(%s) -> %s", in.Key, o)
	case "put":
		return fmt.Sprintf("put(%s, %s) -> %s", in.Key, in.Value, o)
	case "copy":
		return fmt.Sprintf("copy(%s -> %s) -> %s", in.From, in.To, o)
	case "cas":
		return fmt.Sprintf("cas(%s, %s, %s) -> %s", in.Key, in.Expected, in.Value, o)
	}
	return fmt.Sprintf("%s?", in.Op)
}

var kvModel = porcupine.Model{
	Init: func() interface{} { return state{} },
	Step: func(s, in, out interface{}) (bool, interface{}) {
		return step(s.(state), in.(input), out.(*string))
	},
	Equal: func(a, b interface{}) bool {
		x, y := a.(state), b.(state)
		if len(x) != len(y) {
			return false
		}
		for k, v := range x {
			if w, ok := y[k]; !ok || w != v {
				return false
			}
		}
		return true
	},
	DescribeOperation: func(in, out interface{}) string { return describe(in.(input), out.(*string)) },
	DescribeState: func(s interface{}) string {
		keys := make([]string, 0, len(s.(state)))
		for k := range s.(state) {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = k + "=" + s.(state)[k]
		}
		return "{" + strings.Join(parts, ", ") + "}"
	},
}

func load(r io.Reader) ([]porcupine.Operation, error) {
	var h history
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		return nil, fmt.Errorf("history does not parse: %w", err)
	}
	ops := make([]porcupine.Operation, 0, len(h.Operations))
	for i, r := range h.Operations {
		switch r.Input.Op {
		case "get", "put", "copy", "cas":
		default:
			return nil, fmt.Errorf("operation %d: unknown op %q", i, r.Input.Op)
		}
		ret := r.Return
		out := r.Output
		if r.Pending {
			ret, out = math.MaxInt64, nil
		} else if out == nil {
			return nil, fmt.Errorf("operation %d: no output and not pending", i)
		}
		if ret < r.Call {
			return nil, fmt.Errorf("operation %d: returns (%d) before its call (%d)", i, ret, r.Call)
		}
		ops = append(ops, porcupine.Operation{ClientId: r.Client, Input: r.Input, Call: r.Call, Output: out, Return: ret})
	}
	return ops, nil
}

func main() {
	timeout := flag.Duration("timeout", time.Minute, "give up (exit 2) after this long")
	viz := flag.String("viz", "", "on a violation, write Porcupine's HTML visualization here")
	flag.Parse()
	var r io.Reader = os.Stdin
	if flag.NArg() > 0 {
		f, err := os.Open(flag.Arg(0))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		defer f.Close()
		r = f
	}
	ops, err := load(r)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	res, info := porcupine.CheckOperationsVerbose(kvModel, ops, *timeout)
	switch res {
	case porcupine.Ok:
		fmt.Printf("linearizable: %d operations\n", len(ops))
	case porcupine.Illegal:
		fmt.Printf("VIOLATION: %d operations are not linearizable\n", len(ops))
		for _, o := range ops {
			fmt.Printf("  client %d [%d, %d] %s\n", o.ClientId, o.Call, o.Return, describe(o.Input.(input), o.Output.(*string)))
		}
		if *viz != "" {
			if err := porcupine.VisualizePath(kvModel, info, *viz); err != nil {
				fmt.Fprintln(os.Stderr, err)
			}
		}
		os.Exit(1)
	default:
		fmt.Printf("check timed out after %v (%d operations)\n", *timeout, len(ops))
		os.Exit(2)
	}
}
