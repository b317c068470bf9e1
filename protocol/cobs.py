# Consistent Overhead Byte Stuffing: removes every 0x00 so 0x00 can delimit frames on the wire.


class COBSError(ValueError):
    pass


def encode(data):
    out = bytearray(len(data) + len(data) // 254 + 2)
    code_at = 0
    code = 1
    o = 1
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
    return bytes(out[:o])


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
