-- brokerd.lua - a Wireshark dissector for the brokerd wire protocol
-- (broker-protocol(7)), for the captures `brokerctl capture` writes.
--
-- A packet of link type LINKTYPE_USER0 (147) holds one or more frames
-- back to back, each a 32-byte little-endian header and `length` payload
-- bytes, as on the broker's SOCK_SEQPACKET socket.  brokerctl capture
-- writes one frame per packet (the header as the receiver got it and the
-- first --snap payload bytes); a packet the snap length cut short is
-- decoded as far as it goes.  Decoded: every header field, the frame
-- types, flags, CTRL operations, error codes, names and topics, HELLO,
-- WELCOME, SEGMENT, shared-memory descriptors, RELEASE records,
-- SEG_DROP, GAP, FLOW and MONITOR records (the frame inside is decoded too).
-- Frames that break the format get expert info.
--
-- Use:  tshark -X lua_script:contrib/wireshark/brokerd.lua -r FILE
-- or install it (make install puts it in Wireshark's global Lua plugin
-- folder, see `tshark -G folders`) and open captures with no options.
-- Display filters: brokerd, brokerd.type == 3, brokerd.name == "echo",
-- brokerd.flags.shm == 1, brokerd.topic matches "^sensors\\."

local p = Proto("brokerd", "brokerd broker protocol")

-- Bitwise and: Wireshark's Lua 5.2 has the bit library, Lua 5.3 and
-- later have the operator.
local band = (bit and bit.band) or (bit32 and bit32.band) or
    load("return function(a, b) return a & b end")()

local HDR = 32

local types = {
    [1] = "HELLO", [2] = "WELCOME", [3] = "DATA", [4] = "CLOSE",
    [5] = "ERROR", [6] = "CTRL", [7] = "CTRL_REPLY", [8] = "BYE",
    [9] = "SEGMENT", [10] = "RELEASE", [11] = "SEG_DROP", [12] = "MONITOR",
    [13] = "GAP", [14] = "FLOW",
}
local T = {}
for k, v in pairs(types) do T[v] = k end

local ops = {
    [1] = "PING", [2] = "REGISTER", [3] = "RELEASE", [4] = "RESOLVE",
    [5] = "STATUS", [6] = "SEGMENT", [7] = "LIST_CLIENTS",
    [8] = "LIST_NAMES", [9] = "LIST_STREAMS", [10] = "LIST_SHM",
    [11] = "KICK", [12] = "SHUTDOWN", [13] = "RELOAD", [14] = "MONITOR",
    [15] = "SUBSCRIBE", [16] = "UNSUBSCRIBE", [17] = "LIST_SUBS",
    [18] = "REGISTER_EX",
}

-- The Linux errno values the broker reports (broker-protocol(7), ERROR
-- CODES), by name.
local errnos = {
    [0] = "OK", [1] = "EPERM", [2] = "ENOENT", [3] = "ESRCH", [4] = "EINTR",
    [5] = "EIO", [7] = "E2BIG", [9] = "EBADF", [11] = "EAGAIN",
    [12] = "ENOMEM", [13] = "EACCES", [14] = "EFAULT", [16] = "EBUSY",
    [17] = "EEXIST", [19] = "ENODEV", [22] = "EINVAL", [23] = "ENFILE",
    [24] = "EMFILE", [27] = "EFBIG", [28] = "ENOSPC", [32] = "EPIPE",
    [34] = "ERANGE", [36] = "ENAMETOOLONG", [38] = "ENOSYS",
    [61] = "ENODATA", [62] = "ETIME", [63] = "ENOSR", [71] = "EPROTO",
    [74] = "EBADMSG", [75] = "EOVERFLOW", [90] = "EMSGSIZE",
    [93] = "EPROTONOSUPPORT", [95] = "EOPNOTSUPP", [103] = "ECONNABORTED",
    [104] = "ECONNRESET", [105] = "ENOBUFS", [107] = "ENOTCONN",
    [108] = "ESHUTDOWN", [110] = "ETIMEDOUT", [111] = "ECONNREFUSED",
    [125] = "ECANCELED",
}

local policies = { [0] = "drop", [1] = "block", [2] = "disconnect" }

local F_MORE, F_CONT, F_OPEN, F_CLOSE = 0x01, 0x02, 0x04, 0x08
local F_NAME, F_SHM, F_TOPIC = 0x10, 0x20, 0x40
local flag_names = { "MORE", "CONT", "OPEN", "CLOSE", "NAME", "SHM", "TOPIC" }

local f = {
    frame = ProtoField.bytes("brokerd.frame", "Frame", base.NONE),
    version = ProtoField.uint8("brokerd.version", "Version"),
    type = ProtoField.uint8("brokerd.type", "Type", base.DEC, types),
    flags = ProtoField.uint8("brokerd.flags", "Flags", base.HEX),
    more = ProtoField.uint8("brokerd.flags.more", "MORE", base.DEC, nil, F_MORE),
    cont = ProtoField.uint8("brokerd.flags.cont", "CONT", base.DEC, nil, F_CONT),
    open = ProtoField.uint8("brokerd.flags.open", "OPEN", base.DEC, nil, F_OPEN),
    close = ProtoField.uint8("brokerd.flags.close", "CLOSE", base.DEC, nil, F_CLOSE),
    fname = ProtoField.uint8("brokerd.flags.name", "NAME", base.DEC, nil, F_NAME),
    shm = ProtoField.uint8("brokerd.flags.shm", "SHM", base.DEC, nil, F_SHM),
    ftopic = ProtoField.uint8("brokerd.flags.topic", "TOPIC", base.DEC, nil, F_TOPIC),
    freserved = ProtoField.uint8("brokerd.flags.reserved", "Reserved bit", base.DEC, nil, 0x80),
    nfds = ProtoField.uint8("brokerd.nfds", "File descriptors"),
    length = ProtoField.uint32("brokerd.length", "Payload length"),
    stream = ProtoField.uint32("brokerd.stream", "Stream", base.HEX),
    aux = ProtoField.uint32("brokerd.aux", "Aux"),
    source = ProtoField.uint64("brokerd.source", "Source client"),
    dest = ProtoField.uint64("brokerd.dest", "Destination client"),
    name_len = ProtoField.uint32("brokerd.name_len", "Name length"),
    topic_len = ProtoField.uint32("brokerd.topic_len", "Topic length"),
    op = ProtoField.uint32("brokerd.ctrl.op", "Operation", base.DEC, ops),
    err = ProtoField.uint32("brokerd.error", "Error code", base.DEC, errnos),
    sub_id = ProtoField.uint32("brokerd.sub_id", "Subscription"),
    name = ProtoField.string("brokerd.name", "Name"),
    topic = ProtoField.string("brokerd.topic", "Topic"),
    text = ProtoField.string("brokerd.text", "Text"),
    payload = ProtoField.bytes("brokerd.payload", "Payload"),
    truncated = ProtoField.uint32("brokerd.not_captured", "Bytes not captured"),
    hello_version = ProtoField.uint32("brokerd.hello.version", "Protocol version"),
    hello_desc = ProtoField.string("brokerd.hello.description", "Description"),
    w_id = ProtoField.uint64("brokerd.welcome.client_id", "Client id"),
    w_packet = ProtoField.uint32("brokerd.welcome.max_packet", "max_packet"),
    w_fds = ProtoField.uint32("brokerd.welcome.max_fds", "max_fds"),
    w_msg = ProtoField.uint64("brokerd.welcome.max_msg", "max_msg"),
    w_name = ProtoField.uint32("brokerd.welcome.max_name", "max_name"),
    w_streams = ProtoField.uint32("brokerd.welcome.max_streams", "max_streams"),
    w_queue = ProtoField.uint64("brokerd.welcome.queue_limit", "queue_limit"),
    w_segs = ProtoField.uint32("brokerd.welcome.max_segments", "max_segments"),
    w_shm = ProtoField.uint64("brokerd.welcome.max_shm", "max_shm"),
    segid = ProtoField.uint32("brokerd.shm.segid", "Segment"),
    seg_size = ProtoField.uint64("brokerd.shm.segment_size", "Segment size"),
    shm_offset = ProtoField.uint64("brokerd.shm.offset", "Offset"),
    shm_length = ProtoField.uint64("brokerd.shm.length", "Message length"),
    reserved = ProtoField.uint32("brokerd.reserved", "Reserved"),
    release = ProtoField.bytes("brokerd.release", "Release record"),
    rel_peer = ProtoField.uint64("brokerd.release.peer", "Peer"),
    rel_segid = ProtoField.uint32("brokerd.release.segid", "Segment"),
    rel_count = ProtoField.uint32("brokerd.release.count", "Count"),
    rel_offset = ProtoField.uint64("brokerd.release.offset", "Offset"),
    gap = ProtoField.uint64("brokerd.gap.dropped", "Publications dropped"),
    flow_state = ProtoField.uint32("brokerd.flow.state", "Flow state", base.DEC,
                                   { [0] = "READY", [1] = "BUSY" }),
    list_cursor = ProtoField.uint64("brokerd.ctrl.cursor", "Cursor"),
    kick_id = ProtoField.uint64("brokerd.ctrl.client", "Client id"),
    filter = ProtoField.string("brokerd.ctrl.filter", "Monitor filter"),
    policy = ProtoField.uint8("brokerd.ctrl.policy", "Policy", base.DEC, policies),
    pattern = ProtoField.string("brokerd.ctrl.pattern", "Pattern"),
    group = ProtoField.string("brokerd.ctrl.group", "Group"),
    reg_flags = ProtoField.uint32("brokerd.ctrl.reg_flags", "Registration flags", base.HEX),
    m_time = ProtoField.uint64("brokerd.monitor.time_ns", "Time (ns)"),
    m_sender = ProtoField.uint64("brokerd.monitor.sender", "Sender"),
    m_receiver = ProtoField.uint64("brokerd.monitor.receiver", "Receiver"),
    m_ssid = ProtoField.uint32("brokerd.monitor.sender_stream", "Sender's stream", base.HEX),
    m_rsid = ProtoField.uint32("brokerd.monitor.receiver_stream", "Receiver's stream", base.HEX),
    m_length = ProtoField.uint32("brokerd.monitor.length", "Frame payload length"),
    m_captured = ProtoField.uint32("brokerd.monitor.captured", "Captured"),
}
local fl = {}
for _, v in pairs(f) do fl[#fl + 1] = v end
p.fields = fl

local e_malformed = ProtoExpert.new("brokerd.malformed", "Malformed frame",
    expert.group.MALFORMED, expert.severity.ERROR)
local e_cut = ProtoExpert.new("brokerd.cut", "Payload cut short by the snap length",
    expert.group.UNDECODED, expert.severity.NOTE)
local e_error = ProtoExpert.new("brokerd.error_reply", "Error reported",
    expert.group.RESPONSE_CODE, expert.severity.WARN)
p.experts = { e_malformed, e_cut, e_error }

local function flags_text(v)
    local t = {}
    for i, n in ipairs(flag_names) do
        if band(v, 2 ^ (i - 1)) ~= 0 then t[#t + 1] = n end
    end
    return #t > 0 and table.concat(t, ",") or "-"
end

-- A string field of n bytes at off, as far as it was captured.
local function add_string(tree, field, tvb, off, n)
    local have = tvb:len() - off
    if have <= 0 or n == 0 then return "" end
    if n > have then n = have end
    local r = tvb:range(off, n)
    tree:add(field, r)
    return r:string()
end

local function malformed(item, text)
    item:add_proto_expert_info(e_malformed, text)
end

-- ---- payloads, by frame type -------------------------------------------

local function shm_desc(tree, tvb, off, len)
    if len ~= 24 then
        malformed(tree, "a shared-memory descriptor is 24 bytes, not " .. len)
    end
    if tvb:len() < off + 24 then return nil end
    local t = tree:add(p, tvb:range(off, 24), "Shared-memory descriptor")
    t:add_le(f.segid, tvb:range(off, 4))
    t:add_le(f.reserved, tvb:range(off + 4, 4))
    t:add_le(f.shm_offset, tvb:range(off + 8, 8))
    t:add_le(f.shm_length, tvb:range(off + 16, 8))
    return tvb:range(off + 16, 8):le_uint64()
end

local function data_payload(tree, tvb, off, h, info)
    local n = 0
    if band(h.flags, F_CONT) == 0 and band(h.flags, F_NAME) ~= 0 then
        n = h.aux
        local s = add_string(tree, f.name, tvb, off, n)
        info[#info + 1] = "to " .. s
    elseif band(h.flags, F_CONT) == 0 and band(h.flags, F_TOPIC) ~= 0 then
        n = h.aux
        local s = add_string(tree, f.topic, tvb, off, n)
        info[#info + 1] = "topic " .. s
    end
    if n > h.length then
        malformed(tree, "name or topic longer than the payload")
        return
    end
    local body = h.length - n
    if band(h.flags, F_SHM) ~= 0 then
        local len = shm_desc(tree, tvb, off + n, body)
        info[#info + 1] = "shm " .. (len and tostring(len) or "?") .. " bytes"
        return
    end
    info[#info + 1] = body .. " bytes"
    local have = math.min(body, math.max(0, tvb:len() - off - n))
    if have > 0 then tree:add(f.payload, tvb:range(off + n, have)) end
end

local function release_records(tree, tvb, off, len)
    if len % 24 ~= 0 then
        malformed(tree, "RELEASE payload is not a multiple of 24 bytes")
    end
    local o = off
    while o + 24 <= off + len and o + 24 <= tvb:len() do
        local t = tree:add(f.release, tvb:range(o, 24))
        t:add_le(f.rel_peer, tvb:range(o, 8))
        t:add_le(f.rel_segid, tvb:range(o + 8, 4))
        t:add_le(f.rel_count, tvb:range(o + 12, 4))
        t:add_le(f.rel_offset, tvb:range(o + 16, 8))
        t:set_text(string.format("Release: peer %s segment %d count %d offset %s",
            tostring(tvb:range(o, 8):le_uint64()), tvb:range(o + 8, 4):le_uint(),
            tvb:range(o + 12, 4):le_uint(), tostring(tvb:range(o + 16, 8):le_uint64())))
        o = o + 24
    end
    return math.floor(len / 24)
end

local function segment(tree, tvb, off, len)
    if len ~= 16 then malformed(tree, "a segment payload is 16 bytes") end
    if tvb:len() < off + 16 then return end
    tree:add_le(f.segid, tvb:range(off, 4))
    tree:add_le(f.reserved, tvb:range(off + 4, 4))
    tree:add_le(f.seg_size, tvb:range(off + 8, 8))
end

local function welcome(tree, tvb, off, len)
    if len < 56 then malformed(tree, "WELCOME is at least 56 bytes") end
    if tvb:len() < off + 56 then return end
    tree:add_le(f.w_id, tvb:range(off, 8))
    tree:add_le(f.w_packet, tvb:range(off + 8, 4))
    tree:add_le(f.w_fds, tvb:range(off + 12, 4))
    tree:add_le(f.w_msg, tvb:range(off + 16, 8))
    tree:add_le(f.w_name, tvb:range(off + 24, 4))
    tree:add_le(f.w_streams, tvb:range(off + 28, 4))
    tree:add_le(f.w_queue, tvb:range(off + 32, 8))
    tree:add_le(f.w_segs, tvb:range(off + 40, 4))
    tree:add_le(f.w_shm, tvb:range(off + 48, 8))
end

local function ctrl_payload(tree, tvb, off, h, info)
    local op, len = h.aux, h.length
    local have = math.max(0, tvb:len() - off)
    info[#info + 1] = ops[op] or ("op " .. op)
    if op == 2 or op == 4 then
        info[#info + 1] = add_string(tree, f.name, tvb, off, len)
    elseif op == 18 and have >= 4 then
        tree:add_le(f.reg_flags, tvb:range(off, 4))
        info[#info + 1] = add_string(tree, f.name, tvb, off + 4, len - 4)
    elseif op == 6 then
        segment(tree, tvb, off, len)
    elseif op >= 7 and op <= 10 or op == 17 or op == 19 then
        if len == 8 and have >= 8 then tree:add_le(f.list_cursor, tvb:range(off, 8)) end
    elseif op == 11 and have >= 8 then
        tree:add_le(f.kick_id, tvb:range(off, 8))
    elseif op == 14 then
        add_string(tree, f.filter, tvb, off, len)
    elseif op == 15 and have >= 8 then
        local plen = tvb:range(off + 2, 2):le_uint()
        local glen = tvb:range(off + 4, 2):le_uint()
        tree:add_le(f.policy, tvb:range(off, 1))
        if 8 + plen + glen ~= len then
            malformed(tree, "SUBSCRIBE lengths do not add up to the payload")
        end
        info[#info + 1] = add_string(tree, f.pattern, tvb, off + 8, plen)
        add_string(tree, f.group, tvb, off + 8 + plen, glen)
    elseif op == 16 and have >= 4 then
        tree:add_le(f.sub_id, tvb:range(off, 4))
    elseif len > 0 and have > 0 then
        tree:add(f.payload, tvb:range(off, math.min(len, have)))
    end
end

local function payload(tree, tvb, off, h, info)
    local t, len = h.type, h.length
    local have = math.max(0, tvb:len() - off)
    if t == T.DATA then
        data_payload(tree, tvb, off, h, info)
    elseif t == T.HELLO and have >= 4 then
        tree:add_le(f.hello_version, tvb:range(off, 4))
        add_string(tree, f.hello_desc, tvb, off + 4, len - 4)
    elseif t == T.WELCOME then
        welcome(tree, tvb, off, len)
    elseif t == T.CTRL then
        ctrl_payload(tree, tvb, off, h, info)
    elseif t == T.SEGMENT then
        segment(tree, tvb, off, len)
    elseif t == T.RELEASE then
        info[#info + 1] = release_records(tree, tvb, off, len) .. " records"
    elseif t == T.SEG_DROP and have >= 4 then
        tree:add_le(f.segid, tvb:range(off, 4))
    elseif t == T.GAP and have >= 8 then
        tree:add_le(f.gap, tvb:range(off, 8))
        info[#info + 1] = tostring(tvb:range(off, 8):le_uint64()) .. " dropped"
    elseif t == T.FLOW then
        info[#info + 1] = (h.aux == 1 and "busy " or "ready ") ..
            tostring(h.source)
        if len > 0 and have > 0 then
            add_string(tree, f.name, tvb, off, len)
        end
    elseif t == T.ERROR and h.stream == 0xffffffff and have > 0 then
        -- a summary (broker-protocol(7), Peer disconnect): the text starts
        -- with the count of the errors it stands for
        add_string(tree, f.text, tvb, off, len)
        local count = tvb:range(off, math.min(len, have)):string():match("^%d+")
        info[#info + 1] = "summary of " .. (count or "?")
    elseif (t == T.ERROR or t == T.CTRL_REPLY or t == T.CLOSE or t == T.BYE)
            and have > 0 then
        add_string(tree, f.text, tvb, off, len)
    elseif t == T.MONITOR then
        return "monitor"
    elseif len > 0 and have > 0 then
        tree:add(f.payload, tvb:range(off, math.min(len, have)))
    end
end

-- ---- one frame ----------------------------------------------------------

local frame                     -- forward: MONITOR records hold a frame

-- The meaning of aux for this frame type, as its own field.
local function aux_field(tree, r, h)
    if h.type == T.DATA and band(h.flags, F_NAME) ~= 0 then
        tree:add_le(f.name_len, r)
    elseif h.type == T.DATA and band(h.flags, F_TOPIC) ~= 0 then
        tree:add_le(f.topic_len, r)
    elseif h.type == T.CTRL then
        tree:add_le(f.op, r)
    elseif h.type == T.GAP then
        tree:add_le(f.sub_id, r)
    elseif h.type == T.FLOW then
        tree:add_le(f.flow_state, r)
    elseif h.type == T.CLOSE or h.type == T.ERROR or h.type == T.CTRL_REPLY
            or h.type == T.BYE then
        local item = tree:add_le(f.err, r)
        if h.aux ~= 0 then
            item:add_proto_expert_info(e_error, errnos[h.aux] or tostring(h.aux))
        end
    end
end

local function header(tree, tvb, off, h)
    tree:add(f.version, tvb:range(off, 1))
    tree:add(f.type, tvb:range(off + 1, 1))
    local ft = tree:add(f.flags, tvb:range(off + 2, 1))
    ft:append_text(" (" .. flags_text(h.flags) .. ")")
    for _, k in ipairs({ "more", "cont", "open", "close", "fname", "shm",
                         "ftopic", "freserved" }) do
        ft:add(f[k], tvb:range(off + 2, 1))
    end
    tree:add(f.nfds, tvb:range(off + 3, 1))
    tree:add_le(f.length, tvb:range(off + 4, 4))
    tree:add_le(f.stream, tvb:range(off + 8, 4))
    local ar = tvb:range(off + 12, 4)
    tree:add_le(f.aux, ar)
    aux_field(tree, ar, h)
    tree:add_le(f.source, tvb:range(off + 16, 8))
    local dr = tvb:range(off + 24, 8)
    if h.type == T.DATA and band(h.flags, F_TOPIC) ~= 0 then
        -- delivered publications carry the subscription id in dest
        tree:add_le(f.sub_id, tvb:range(off + 24, 4))
    end
    tree:add_le(f.dest, dr)
end

-- Checks of broker-protocol(7) VALIDATION that need only the frame.
local function check(item, h)
    if h.version ~= 1 then malformed(item, "version " .. h.version .. ", not 1") end
    if not types[h.type] then malformed(item, "unknown frame type " .. h.type) end
    if h.type ~= T.DATA and h.flags ~= 0 then
        malformed(item, "flags on a frame that is not DATA")
    end
    if band(h.flags, 0x80) ~= 0 then malformed(item, "reserved flag 0x80 set") end
    if band(h.flags, F_CONT) ~= 0 and band(h.flags,
            F_OPEN + F_NAME + F_TOPIC + F_SHM) ~= 0 then
        malformed(item, "a continuation fragment with OPEN, NAME, TOPIC or SHM")
    end
    if band(h.flags, F_MORE) ~= 0 and band(h.flags, F_CLOSE) ~= 0 then
        malformed(item, "MORE and CLOSE on one frame")
    end
    if band(h.flags, F_NAME) ~= 0 and band(h.flags, F_TOPIC) ~= 0 then
        malformed(item, "NAME and TOPIC on one frame")
    end
end

local function monitor_record(tree, tvb, off, h, pinfo)
    if h.length < 72 or tvb:len() < off + 72 then
        malformed(tree, "a MONITOR record is at least 72 bytes")
        return
    end
    tree:add_le(f.m_time, tvb:range(off, 8))
    tree:add_le(f.m_sender, tvb:range(off + 8, 8))
    tree:add_le(f.m_receiver, tvb:range(off + 16, 8))
    tree:add_le(f.m_ssid, tvb:range(off + 24, 4))
    tree:add_le(f.m_rsid, tvb:range(off + 28, 4))
    tree:add_le(f.m_length, tvb:range(off + 32, 4))
    tree:add_le(f.m_captured, tvb:range(off + 36, 4))
    local cap = tvb:range(off + 36, 4):le_uint()
    if 72 + cap ~= h.length then
        malformed(tree, "captured length does not match the record's length")
    end
    local n = math.min(32 + cap, tvb:len() - off - 40)
    frame(tree, tvb:range(off + 40, n):tvb(), 0, pinfo, {})
end

-- Decode the frame at off; returns its length (header and payload).
frame = function(tree, tvb, off, pinfo, summary)
    local left = tvb:len() - off
    if left < HDR then
        local item = tree:add(p, tvb:range(off, left), "Incomplete frame header")
        malformed(item, "a packet must end on a frame boundary")
        return left
    end
    local h = {
        version = tvb:range(off, 1):uint(), type = tvb:range(off + 1, 1):uint(),
        flags = tvb:range(off + 2, 1):uint(), nfds = tvb:range(off + 3, 1):uint(),
        length = tvb:range(off + 4, 4):le_uint(), stream = tvb:range(off + 8, 4):le_uint(),
        aux = tvb:range(off + 12, 4):le_uint(),
        source = tvb:range(off + 16, 8):le_uint64(), dest = tvb:range(off + 24, 8):le_uint64(),
    }
    local have = math.min(HDR + h.length, left)
    local t = tree:add(p, tvb:range(off, have))
    local name = types[h.type] or ("type " .. h.type)
    local info = { name }
    if h.type == T.DATA then info[#info + 1] = flags_text(h.flags) end
    check(t, h)
    header(t, tvb, off, h)
    if h.type == T.MONITOR then
        monitor_record(t, tvb, off + HDR, h, pinfo)
    else
        payload(t, tvb, off + HDR, h, info)
    end
    if (h.type == T.CLOSE or h.type == T.ERROR or h.type == T.CTRL_REPLY)
            and h.aux ~= 0 then
        info[#info + 1] = errnos[h.aux] or ("error " .. h.aux)
    end
    t:set_text(string.format("brokerd %s, stream 0x%x, %s -> %s", table.concat(info, " "),
        h.stream, tostring(h.source), tostring(h.dest)))
    summary[#summary + 1] = table.concat(info, " ")
    if HDR + h.length > left then
        local missing = HDR + h.length - left
        if off + HDR + h.length <= tvb:reported_len() then
            t:add(f.truncated, missing):set_generated()
            t:add_proto_expert_info(e_cut)
        else
            malformed(t, "the frame's payload runs past the end of the packet")
        end
        return HDR + h.length
    end
    return HDR + h.length
end

function p.dissector(tvb, pinfo, tree)
    pinfo.cols.protocol = "brokerd"
    local off, summary = 0, {}
    local first = true
    while off < tvb:len() do
        if first and tvb:len() >= HDR then
            pinfo.cols.src = tostring(tvb:range(off + 16, 8):le_uint64())
            pinfo.cols.dst = tostring(tvb:range(off + 24, 8):le_uint64())
        end
        first = false
        off = off + frame(tree, tvb, off, pinfo, summary)
    end
    pinfo.cols.info = table.concat(summary, "; ")
    return tvb:len()
end

local encap = (wtap_encaps and wtap_encaps.USER0) or wtap.USER0
DissectorTable.get("wtap_encap"):add(encap, p)
