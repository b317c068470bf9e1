# Small persistent values in flash, written atomically (new file, then rename: littlefs and POSIX
# both make the rename atomic, so a power cut leaves the old value or the new one).
import os


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def makedirs(path):
    cur = "/" if path.startswith("/") else ""
    for part in path.split("/"):
        if part:
            cur = cur + part if cur in ("", "/") else cur + "/" + part
            if not exists(cur):
                os.mkdir(cur)


def write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)


def read_bytes(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def read_int(path, default=0):
    data = read_bytes(path)
    try:
        return int(data) if data else default
    except ValueError:
        return default


def write_int(path, value):
    write_atomic(path, str(value).encode())


def _hex16(raw):
    # an instance id exactly as written (16 lowercase hex characters), else None: int(raw, 16)
    # would also take spaces, signs and underscores, which the gateway then refuses
    if not raw or len(raw) != 16:
        return None
    for c in raw:
        if not (48 <= c <= 57 or 97 <= c <= 102):
            return None
    return raw.decode()


def life(root):
    """(instance id, boot number, trouble or None). The pair is the first part of every event's
    identity, so the boot number may only grow within one instance, and an instance is 64
    random bits (16 hex characters) made once: a flash erase or a new board gets a new one. If
    either file cannot be read back as written (missing, damaged, out of range), a new instance
    begins at boot 1; if they cannot be written at all, this boot runs as an instance of its
    own that is not kept. Either way no event id can repeat, and the trouble is said."""
    ipath = root + "/instance"
    bpath = root + "/bootcount"
    inst = _hex16(read_bytes(ipath))
    raw = read_bytes(bpath)
    last = int(raw) if raw and raw.isdigit() and len(raw) <= 10 else -1
    trouble = None
    if inst is None or not 0 <= last < 0xFFFFFFFE:
        if inst is not None or last >= 0 or raw:
            trouble = "instance id or boot counter unreadable: a new instance begins"
        inst = "".join("%02x" % b for b in os.urandom(8))
        last = 0
    try:
        if last == 0:  # the instance first: a cut between the two keeps ids unique
            write_atomic(ipath, inst.encode())
        write_int(bpath, last + 1)
    except OSError as e:
        inst = "".join("%02x" % b for b in os.urandom(8))
        return inst, 1, "data not writable (%s): this boot's instance is not kept" % e
    return inst, last + 1, trouble
