# Consistent Overhead Byte Stuffing: removes every 0x00 so 0x00 can delimit frames on the wire.


class COBSError(ValueError):
    pass


def _encoded_len(data):
    # exact: one code byte to start, plus one for every run of 254 non-zero bytes that is
    # followed by more data (a zero byte's slot is taken by the next code byte)
    n = len(data) + 1
    if n < 255:  # no run can reach 254 bytes: every frame but the largest, without a scan
        return n
    run = 0
    for b in data:
        if b:
            run += 1
            if run == 254:
                n += 1
                run = 0
        else:
            run = 0
    return n


def _encode(data, pad):
    # one allocation of the exact size (the device's heap is small and in pieces); `pad` zero
    # bytes are left on each side for frame delimiters
    out = bytearray(_encoded_len(data) + 2 * pad)
    code_at = pad
    code = 1
    o = pad + 1
    for b in data:
        if b:
            out[o] = b
            o += 1
            code += 1
            if code == 0xFF:
                out[code_at] = code
                code_at = o
                o += 1
                code = 1
        else:
            out[code_at] = code
            code_at = o
            o += 1
            code = 1
    out[code_at] = code
    return out


def encode(data):
    return bytes(_encode(data, 0))


def encode_delimited(data):
    """0x00 | COBS(data) | 0x00, as a bytearray built in one piece."""
    return _encode(data, 1)


def decode(data):
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise COBSError("zero byte inside COBS data")
        end = i + code
        if end > n:
            raise COBSError("COBS block runs past the end")
        block = data[i + 1 : end]
        if b"\x00" in block:
            raise COBSError("zero byte inside COBS data")
        out.extend(block)
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)
