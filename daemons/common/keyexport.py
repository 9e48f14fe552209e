"""`keys --wireshark DIR`: write Wireshark's IKEv1 and ESP decryption tables for the live SAs (natt.wireshark).

The files hold every live session's keys, so they are written as carefully as a key file: DIR is created 0700 if
it does not exist, and an existing DIR must be a real directory owned by the daemon's user that nobody else may
enter (a directory others can write to could hold a symlink waiting for our keys). Each file is written under a
temporary name, 0600 from its creation, and renamed over the old one, so a reader sees the old table or the new
one and a symlink at the final name is replaced, never followed. Nothing here logs a key: the caller logs only
the counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from natt.esp.table import SaTable
from natt.ike.ikesa import IkeSA
from natt.wireshark import ESP_TABLE, IKEV1_TABLE, esp_lines, ikev1_lines
from natt_daemons.common.control import ControlError

__all__ = ["HEADER", "KeyExport", "export_keys", "reply_text", "write_tables"]

HEADER = "# natt keys --wireshark: secret keys of live SAs; delete this file when done\n"


@dataclass(frozen=True)
class KeyExport:
    directory: str
    ike_sas: int
    esp_sas: int

    def reply(self) -> dict[str, object]:
        return {"directory": self.directory, "files": [IKEV1_TABLE, ESP_TABLE], "ike_sas": self.ike_sas,
                "esp_sas": self.esp_sas}


def _open_directory(path: str) -> int:
    """An fd on DIR (made 0700 if missing), refusing one that is not ours alone."""
    if not os.path.isabs(path):
        raise ControlError(f"{path!r} is not an absolute path")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as e:
        raise ControlError(f"cannot make directory {path}: {e.strerror}") from e
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as e:
        raise ControlError(f"cannot open directory {path}: {e.strerror}") from e
    st = os.fstat(fd)
    problem = None
    if st.st_uid != os.geteuid():
        problem = f"is owned by uid {st.st_uid}, not by the daemon's user (uid {os.geteuid()})"
    elif st.st_mode & 0o077:
        problem = f"has mode {stat.S_IMODE(st.st_mode):04o}: others may enter it (chmod 700, or name a new one)"
    if problem is not None:
        os.close(fd)
        raise ControlError(f"refusing to write keys into {path}: it {problem}")
    return fd


def _write(dir_fd: int, name: str, lines: Sequence[str]) -> None:
    temp = f".{name}.{secrets.token_hex(4)}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(HEADER + "".join(f"{line}\n" for line in lines))
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=dir_fd)
        raise


def write_tables(directory: str, ike: Sequence[str], esp: Sequence[str]) -> KeyExport:
    """Write both tables into `directory`; ControlError with one line when that cannot be done."""
    dir_fd = _open_directory(directory)
    try:
        _write(dir_fd, IKEV1_TABLE, ike)
        _write(dir_fd, ESP_TABLE, esp)
    except OSError as e:
        sandboxed = e.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
        hint = " (under the systemd unit the daemon may write only below /run/natt)" if sandboxed else ""
        raise ControlError(f"cannot write the key tables into {directory}: {e.strerror}{hint}") from e
    finally:
        os.close(dir_fd)
    return KeyExport(directory, len(ike), len(esp))


async def export_keys(args: Mapping[str, object], sas: Mapping[int, IkeSA], table: SaTable) -> dict[str, object]:
    """The `keys` control command, shared by the concentrator and the client: {"wireshark": DIR} → the counts.
    The lines are made on the loop (the SAs change there); the files are written on a worker thread."""
    directory = args.get("wireshark")
    if not isinstance(directory, str) or not directory:
        raise ControlError("keys needs {'wireshark': DIR}, an absolute directory path")
    ike = ikev1_lines(sas.values())
    esp = [str(line) for line in esp_lines(table, sas)]
    done = await asyncio.to_thread(write_tables, directory, ike, esp)
    return done.reply()


def reply_text(r: Mapping[str, object]) -> str:
    """The CLI's lines for a `keys` reply: where the tables went, how many entries, and how Wireshark takes them."""
    d = r["directory"]
    return (f"wrote {r['ike_sas']} IKE SA(s) to {d}/{IKEV1_TABLE} and {r['esp_sas']} ESP SA direction(s) to "
            f"{d}/{ESP_TABLE}\n"
            f"they hold secret keys (mode 0600): delete them when done. To decrypt a capture that holds the IKE SAs' "
            f"phase 1:\n"
            f"  WIRESHARK_CONFIG_DIR={d} tshark -o esp.enable_encryption_decode:TRUE -r CAPTURE\n"
            f"or copy both files into a Wireshark profile directory (Help > About > Folders).")
