package vmbus

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// MsgType is enum vmbus_channel_message_type (docs/vmbus.md).
type MsgType uint32

// Channel message types.
const (
	MsgInvalid            MsgType = 0
	MsgOfferChannel       MsgType = 1
	MsgRescindOffer       MsgType = 2
	MsgRequestOffers      MsgType = 3
	MsgAllOffersDelivered MsgType = 4
	MsgOpenChannel        MsgType = 5
	MsgOpenResult         MsgType = 6
	MsgCloseChannel       MsgType = 7
	MsgGPADLHeader        MsgType = 8
	MsgGPADLBody          MsgType = 9
	MsgGPADLCreated       MsgType = 10
	MsgGPADLTeardown      MsgType = 11
	MsgGPADLTorndown      MsgType = 12
	MsgRelidReleased      MsgType = 13
	MsgInitiateContact    MsgType = 14
	MsgVersionResponse    MsgType = 15
	MsgUnload             MsgType = 16
	MsgUnloadResponse     MsgType = 17
	msgCount              MsgType = 25
)

var msgNames = [...]string{
	"INVALID", "OFFERCHANNEL", "RESCIND_CHANNELOFFER", "REQUESTOFFERS",
	"ALLOFFERS_DELIVERED", "OPENCHANNEL", "OPENCHANNEL_RESULT", "CLOSECHANNEL",
	"GPADL_HEADER", "GPADL_BODY", "GPADL_CREATED", "GPADL_TEARDOWN",
	"GPADL_TORNDOWN", "RELID_RELEASED", "INITIATE_CONTACT", "VERSION_RESPONSE",
	"UNLOAD", "UNLOAD_RESPONSE",
}

func (t MsgType) String() string {
	if int(t) < len(msgNames) {
		return msgNames[t]
	}
	return fmt.Sprintf("MSGTYPE_%d", uint32(t))
}

// Message limits (docs/vmbus.md).
const (
	// MaxMessageSize is the largest channel message, the SynIC payload.
	MaxMessageSize = 240
	// MaxRelid bounds child_relid: MAX_CHANNEL_RELIDS.
	MaxRelid = 2048
	// FirstGPADL is the first GPADL handle of a connection.
	FirstGPADL = 0xE1E10
	// gpadlHeaderPFNs and gpadlBodyPFNs are the PFNs one GPADL_HEADER and
	// one GPADL_BODY hold.
	gpadlHeaderPFNs = (MaxMessageSize - 20 - 8) / 8
	gpadlBodyPFNs   = (MaxMessageSize - 16) / 8
	// MaxUserData is the size of OPENCHANNEL's userdata.
	MaxUserData = 120
)

// Versions (docs/vmbus.md): major<<16 | minor.
const (
	VersionWS2008  uint32 = 0x0000000D
	VersionWin7    uint32 = 0x00010001
	VersionWin8    uint32 = 0x00020004
	VersionWin8_1  uint32 = 0x00030000
	VersionWin10   uint32 = 0x00040000
	VersionWin10_1 uint32 = 0x00040001
	VersionV5      uint32 = 0x00050000
	VersionV5_1    uint32 = 0x00050001
	VersionV5_2    uint32 = 0x00050002
	VersionV5_3    uint32 = 0x00050003
)

// Versions is every protocol version pagewire knows, newest first: the
// order in which a guest proposes them.
var Versions = []uint32{
	VersionV5_3, VersionV5_2, VersionV5_1, VersionV5, VersionWin10_1,
	VersionWin10, VersionWin8_1, VersionWin8, VersionWin7, VersionWS2008,
}

func knownVersion(v uint32) bool {
	for _, k := range Versions {
		if k == v {
			return true
		}
	}
	return false
}

// ErrBadMessage is matched by every [*MessageError]: a channel message from
// the peer that breaks the rules of spec section 4 item 8.
var ErrBadMessage = errors.New("vmbus: bad channel message")

// MessageError describes a channel message that was rejected.
type MessageError struct {
	Type  MsgType
	Field string // "length", "msgtype", "child_relid", "rangecount", ...
	Value uint64
	Err   error // extra detail, may be nil
}

func (e *MessageError) Error() string {
	s := fmt.Sprintf("vmbus: bad channel message %v: %s=%d", e.Type, e.Field, e.Value)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns ErrBadMessage and the detail.
func (e *MessageError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrBadMessage}
	}
	return []error{ErrBadMessage, e.Err}
}

// Message is one decoded channel message; the concrete types are the
// Msg* structs below.
type Message interface {
	// Type is the message's msgtype.
	Type() MsgType
	// AppendBinary appends the message's wire form, header included.
	AppendBinary(b []byte) ([]byte, error)
}

var le = binary.LittleEndian

// Fixed sizes, header included (docs/vmbus.md).
var msgSize = map[MsgType]int{
	MsgOfferChannel: 196, MsgRescindOffer: 12, MsgRequestOffers: 8,
	MsgAllOffersDelivered: 8, MsgOpenChannel: 148, MsgOpenResult: 20,
	MsgCloseChannel: 12, MsgGPADLCreated: 20, MsgGPADLTeardown: 16,
	MsgGPADLTorndown: 12, MsgRelidReleased: 12, MsgInitiateContact: 40,
	MsgVersionResponse: 16, MsgUnload: 8, MsgUnloadResponse: 8,
}

// Initiate is CHANNELMSG_INITIATE_CONTACT.
type Initiate struct {
	Version       uint32
	TargetVCPU    uint32
	InterruptPage uint64 // for >= 5.0: msg_sint in the low byte
	MonitorPage1  uint64
	MonitorPage2  uint64
}

// VersionResponse is CHANNELMSG_VERSION_RESPONSE.
type VersionResponse struct {
	Supported bool
	State     uint8
	ConnID    uint32
}

// Offer is CHANNELMSG_OFFERCHANNEL.
type Offer struct {
	IfType, IfInstance [16]byte
	Flags              uint16
	MMIOMegabytes      uint16
	UserDef            [120]byte
	SubChannelIndex    uint16
	Relid              uint32
	MonitorID          uint8
	MonitorAllocated   bool
	Dedicated          bool
	ConnectionID       uint32
}

// RelidMsg is one of the messages that carry only a child_relid:
// RESCIND_CHANNELOFFER, CLOSECHANNEL, RELID_RELEASED.
type RelidMsg struct {
	Kind  MsgType
	Relid uint32
}

// BareMsg is a header-only message: REQUESTOFFERS, ALLOFFERS_DELIVERED,
// UNLOAD, UNLOAD_RESPONSE.
type BareMsg struct{ Kind MsgType }

// OpenChannel is CHANNELMSG_OPENCHANNEL.
type OpenChannel struct {
	Relid, OpenID, GPADL, TargetVP, DownstreamOffset uint32
	UserData                                         [MaxUserData]byte
}

// OpenResult is CHANNELMSG_OPENCHANNEL_RESULT.
type OpenResult struct{ Relid, OpenID, Status uint32 }

// GPADLHeader is CHANNELMSG_GPADL_HEADER with its one range; PFNs holds
// the PFNs this message carries (at most 26), Pages the range's total.
type GPADLHeader struct {
	Relid, GPADL uint32
	ByteCount    uint32
	ByteOffset   uint32
	Pages        int
	PFNs         []uint64
}

// GPADLBody is CHANNELMSG_GPADL_BODY.
type GPADLBody struct {
	MsgNumber, GPADL uint32
	PFNs             []uint64
}

// GPADLCreated is CHANNELMSG_GPADL_CREATED.
type GPADLCreated struct{ Relid, GPADL, Status uint32 }

// GPADLTeardown is CHANNELMSG_GPADL_TEARDOWN.
type GPADLTeardown struct{ Relid, GPADL uint32 }

// GPADLTorndown is CHANNELMSG_GPADL_TORNDOWN.
type GPADLTorndown struct{ GPADL uint32 }

func (Initiate) Type() MsgType        { return MsgInitiateContact }
func (VersionResponse) Type() MsgType { return MsgVersionResponse }
func (Offer) Type() MsgType           { return MsgOfferChannel }
func (m RelidMsg) Type() MsgType      { return m.Kind }
func (m BareMsg) Type() MsgType       { return m.Kind }
func (OpenChannel) Type() MsgType     { return MsgOpenChannel }
func (OpenResult) Type() MsgType      { return MsgOpenResult }
func (GPADLHeader) Type() MsgType     { return MsgGPADLHeader }
func (GPADLBody) Type() MsgType       { return MsgGPADLBody }
func (GPADLCreated) Type() MsgType    { return MsgGPADLCreated }
func (GPADLTeardown) Type() MsgType   { return MsgGPADLTeardown }
func (GPADLTorndown) Type() MsgType   { return MsgGPADLTorndown }

// header appends the message header and returns the body's start.
func header(b []byte, t MsgType, size int) ([]byte, []byte) {
	start := len(b)
	b = append(b, make([]byte, size)...)
	le.PutUint32(b[start:], uint32(t))
	return b, b[start:]
}

func (m Initiate) AppendBinary(b []byte) ([]byte, error) {
	b, p := header(b, MsgInitiateContact, 40)
	le.PutUint32(p[8:], m.Version)
	le.PutUint32(p[12:], m.TargetVCPU)
	le.PutUint64(p[16:], m.InterruptPage)
	le.PutUint64(p[24:], m.MonitorPage1)
	le.PutUint64(p[32:], m.MonitorPage2)
	return b, nil
}

func (m VersionResponse) AppendBinary(b []byte) ([]byte, error) {
	b, p := header(b, MsgVersionResponse, 16)
	if m.Supported {
		p[8] = 1
	}
	p[9] = m.State
	le.PutUint32(p[12:], m.ConnID)
	return b, nil
}

func (m Offer) AppendBinary(b []byte) ([]byte, error) {
	b, p := header(b, MsgOfferChannel, 196)
	copy(p[8:], m.IfType[:])
	copy(p[24:], m.IfInstance[:])
	le.PutUint16(p[56:], m.Flags)
	le.PutUint16(p[58:], m.MMIOMegabytes)
	copy(p[60:], m.UserDef[:])
	le.PutUint16(p[180:], m.SubChannelIndex)
	le.PutUint32(p[184:], m.Relid)
	p[188] = m.MonitorID
	if m.MonitorAllocated {
		p[189] = 1
	}
	if m.Dedicated {
		p[190] = 1
	}
	le.PutUint32(p[192:], m.ConnectionID)
	return b, nil
}

func (m RelidMsg) AppendBinary(b []byte) ([]byte, error) {
	switch m.Kind {
	case MsgRescindOffer, MsgCloseChannel, MsgRelidReleased:
	default:
		return b, fmt.Errorf("%w: %v does not carry only a relid", ErrInvalid, m.Kind)
	}
	b, p := header(b, m.Kind, 12)
	le.PutUint32(p[8:], m.Relid)
	return b, nil
}

func (m BareMsg) AppendBinary(b []byte) ([]byte, error) {
	switch m.Kind {
	case MsgRequestOffers, MsgAllOffersDelivered, MsgUnload, MsgUnloadResponse:
	default:
		return b, fmt.Errorf("%w: %v is not a header-only message", ErrInvalid, m.Kind)
	}
	b, _ = header(b, m.Kind, 8)
	return b, nil
}

func (m OpenChannel) AppendBinary(b []byte) ([]byte, error) {
	b, p := header(b, MsgOpenChannel, 148)
	le.PutUint32(p[8:], m.Relid)
	le.PutUint32(p[12:], m.OpenID)
	le.PutUint32(p[16:], m.GPADL)
	le.PutUint32(p[20:], m.TargetVP)
	le.PutUint32(p[24:], m.DownstreamOffset)
	copy(p[28:], m.UserData[:])
	return b, nil
}

func (m OpenResult) AppendBinary(b []byte) ([]byte, error) {
	b, p := header(b, MsgOpenResult, 20)
	le.PutUint32(p[8:], m.Relid)
	le.PutUint32(p[12:], m.OpenID)
	le.PutUint32(p[16:], m.Status)
	return b, nil
}

func (m GPADLHeader) AppendBinary(b []byte) ([]byte, error) {
	if len(m.PFNs) > gpadlHeaderPFNs || m.Pages < len(m.PFNs) || m.Pages > 0xffff/8-1 {
		return b, fmt.Errorf("%w: GPADL header with %d of %d PFNs", ErrInvalid, len(m.PFNs), m.Pages)
	}
	b, p := header(b, MsgGPADLHeader, 28+8*len(m.PFNs))
	le.PutUint32(p[8:], m.Relid)
	le.PutUint32(p[12:], m.GPADL)
	le.PutUint16(p[16:], uint16(8+8*m.Pages)) // range_buflen: the whole range
	le.PutUint16(p[18:], 1)
	le.PutUint32(p[20:], m.ByteCount)
	le.PutUint32(p[24:], m.ByteOffset)
	for i, f := range m.PFNs {
		le.PutUint64(p[28+8*i:], f)
	}
	return b, nil
}

func (m GPADLBody) AppendBinary(b []byte) ([]byte, error) {
	if len(m.PFNs) > gpadlBodyPFNs {
		return b, fmt.Errorf("%w: GPADL body with %d PFNs", ErrInvalid, len(m.PFNs))
	}
	b, p := header(b, MsgGPADLBody, 16+8*len(m.PFNs))
	le.PutUint32(p[8:], m.MsgNumber)
	le.PutUint32(p[12:], m.GPADL)
	for i, f := range m.PFNs {
		le.PutUint64(p[16+8*i:], f)
	}
	return b, nil
}

func (m GPADLCreated) AppendBinary(b []byte) ([]byte, error) {
	b, p := header(b, MsgGPADLCreated, 20)
	le.PutUint32(p[8:], m.Relid)
	le.PutUint32(p[12:], m.GPADL)
	le.PutUint32(p[16:], m.Status)
	return b, nil
}

func (m GPADLTeardown) AppendBinary(b []byte) ([]byte, error) {
	b, p := header(b, MsgGPADLTeardown, 16)
	le.PutUint32(p[8:], m.Relid)
	le.PutUint32(p[12:], m.GPADL)
	return b, nil
}

func (m GPADLTorndown) AppendBinary(b []byte) ([]byte, error) {
	b, p := header(b, MsgGPADLTorndown, 12)
	le.PutUint32(p[8:], m.GPADL)
	return b, nil
}

// ParseMessage decodes one channel message from the peer. b is not
// retained. It checks, in this order, that the message is at most
// MaxMessageSize bytes, that its type is one pagewire speaks, that its
// length is exactly the type's (GPADL_HEADER and GPADL_BODY: consistent
// with their counts), and that every child_relid is in [1, MaxRelid). Any
// violation is a *MessageError; ParseMessage never panics.
func ParseMessage(b []byte) (Message, error) {
	if len(b) < 8 {
		return nil, &MessageError{Field: "length", Value: uint64(len(b)), Err: errors.New("shorter than the message header")}
	}
	t := MsgType(le.Uint32(b))
	if len(b) > MaxMessageSize {
		return nil, &MessageError{Type: t, Field: "length", Value: uint64(len(b)), Err: errors.New("longer than 240 bytes")}
	}
	if t == MsgGPADLHeader {
		return parseGPADLHeader(b)
	}
	if t == MsgGPADLBody {
		if len(b) < 16 || (len(b)-16)%8 != 0 {
			return nil, &MessageError{Type: t, Field: "length", Value: uint64(len(b)), Err: errors.New("want 16 + 8n")}
		}
		m := GPADLBody{MsgNumber: le.Uint32(b[8:]), GPADL: le.Uint32(b[12:])}
		m.PFNs = make([]uint64, (len(b)-16)/8)
		for i := range m.PFNs {
			m.PFNs[i] = le.Uint64(b[16+8*i:])
		}
		return m, nil
	}
	size, ok := msgSize[t]
	if !ok {
		return nil, &MessageError{Type: t, Field: "msgtype", Value: uint64(t), Err: errors.New("unknown or unsupported type")}
	}
	if len(b) != size {
		return nil, &MessageError{Type: t, Field: "length", Value: uint64(len(b)), Err: fmt.Errorf("want %d", size)}
	}
	relid := func(off int) (uint32, error) {
		r := le.Uint32(b[off:])
		if r == 0 || r >= MaxRelid {
			return 0, &MessageError{Type: t, Field: "child_relid", Value: uint64(r), Err: fmt.Errorf("want 1 to %d", MaxRelid-1)}
		}
		return r, nil
	}
	switch t {
	case MsgInitiateContact:
		return Initiate{le.Uint32(b[8:]), le.Uint32(b[12:]), le.Uint64(b[16:]), le.Uint64(b[24:]), le.Uint64(b[32:])}, nil
	case MsgVersionResponse:
		return VersionResponse{b[8] != 0, b[9], le.Uint32(b[12:])}, nil
	case MsgOfferChannel:
		r, err := relid(184)
		if err != nil {
			return nil, err
		}
		m := Offer{Flags: le.Uint16(b[56:]), MMIOMegabytes: le.Uint16(b[58:]),
			SubChannelIndex: le.Uint16(b[180:]), Relid: r, MonitorID: b[188],
			MonitorAllocated: b[189]&1 != 0, Dedicated: le.Uint16(b[190:])&1 != 0,
			ConnectionID: le.Uint32(b[192:])}
		copy(m.IfType[:], b[8:])
		copy(m.IfInstance[:], b[24:])
		copy(m.UserDef[:], b[60:])
		return m, nil
	case MsgRescindOffer, MsgCloseChannel, MsgRelidReleased:
		r, err := relid(8)
		if err != nil {
			return nil, err
		}
		return RelidMsg{t, r}, nil
	case MsgRequestOffers, MsgAllOffersDelivered, MsgUnload, MsgUnloadResponse:
		return BareMsg{t}, nil
	case MsgOpenChannel:
		r, err := relid(8)
		if err != nil {
			return nil, err
		}
		m := OpenChannel{Relid: r, OpenID: le.Uint32(b[12:]), GPADL: le.Uint32(b[16:]),
			TargetVP: le.Uint32(b[20:]), DownstreamOffset: le.Uint32(b[24:])}
		copy(m.UserData[:], b[28:])
		return m, nil
	case MsgOpenResult:
		r, err := relid(8)
		if err != nil {
			return nil, err
		}
		return OpenResult{r, le.Uint32(b[12:]), le.Uint32(b[16:])}, nil
	case MsgGPADLCreated:
		r, err := relid(8)
		if err != nil {
			return nil, err
		}
		return GPADLCreated{r, le.Uint32(b[12:]), le.Uint32(b[16:])}, nil
	case MsgGPADLTeardown:
		r, err := relid(8)
		if err != nil {
			return nil, err
		}
		return GPADLTeardown{r, le.Uint32(b[12:])}, nil
	case MsgGPADLTorndown:
		return GPADLTorndown{le.Uint32(b[8:])}, nil
	}
	return nil, &MessageError{Type: t, Field: "msgtype", Value: uint64(t)}
}

func parseGPADLHeader(b []byte) (Message, error) {
	t := MsgGPADLHeader
	if len(b) < 28 || (len(b)-28)%8 != 0 {
		return nil, &MessageError{Type: t, Field: "length", Value: uint64(len(b)), Err: errors.New("want 28 + 8n")}
	}
	r := le.Uint32(b[8:])
	if r == 0 || r >= MaxRelid {
		return nil, &MessageError{Type: t, Field: "child_relid", Value: uint64(r), Err: fmt.Errorf("want 1 to %d", MaxRelid-1)}
	}
	buflen, count := le.Uint16(b[16:]), le.Uint16(b[18:])
	if count != 1 {
		return nil, &MessageError{Type: t, Field: "rangecount", Value: uint64(count), Err: errors.New("pagewire takes one range")}
	}
	if buflen < 16 || buflen%8 != 0 {
		return nil, &MessageError{Type: t, Field: "range_buflen", Value: uint64(buflen), Err: errors.New("want 8 + 8n, n >= 1")}
	}
	pages := int(buflen-8) / 8
	inMsg := (len(b) - 28) / 8
	if inMsg > pages || (inMsg < pages && inMsg != gpadlHeaderPFNs) || inMsg == 0 {
		return nil, &MessageError{Type: t, Field: "length", Value: uint64(len(b)),
			Err: fmt.Errorf("%d PFNs for a range of %d pages", inMsg, pages)}
	}
	m := GPADLHeader{Relid: r, GPADL: le.Uint32(b[12:]), ByteCount: le.Uint32(b[20:]),
		ByteOffset: le.Uint32(b[24:]), Pages: pages, PFNs: make([]uint64, inMsg)}
	for i := range m.PFNs {
		m.PFNs[i] = le.Uint64(b[28+8*i:])
	}
	return m, nil
}

// MarshalMessage returns m's wire form.
func MarshalMessage(m Message) ([]byte, error) {
	return m.AppendBinary(make([]byte, 0, MaxMessageSize))
}
