package wire

// AppendHelloUnchecked encodes h like Hello.AppendBinary but without
// checking it, so that tests can build hellos no conforming sender sends.
func AppendHelloUnchecked(h *Hello) []byte { return h.appendTo(nil) }
