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
