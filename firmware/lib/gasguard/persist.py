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


def instance(path):
    """The board's instance id (16 hex characters), made once from 64 random bits: a flash
    erase or a new board gets a new one, so its events can never take an earlier life's ids."""
    raw = read_bytes(path)
    if raw and len(raw) == 16:
        try:
            int(raw, 16)
            return raw.decode().lower()
        except ValueError:
            pass
    inst = "".join("%02x" % b for b in os.urandom(8))
    write_atomic(path, inst.encode())
    return inst
