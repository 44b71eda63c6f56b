"""MPI collectives with deadlines and byte counts: the only way ranks talk (SPEC 10).

Every collective is non-blocking (Ibcast, Igather(v), Iscatterv, Ialltoallv, Iallgatherv, and
Isend/Irecv for the chain links) and completed by a Test loop (`fast.mpi_poll`) that
gives up at a deadline (a chain link's receive is posted and tested while the rank computes:
`Channel.irecv`), so no rank can sit inside MPI forever: a deadline that passes raises
CommTimeout (a StallError, exit 3) naming the rank and the collective. Each call adds the payload
bytes this rank sent and received to a ByteCounter (logical payload: a root's broadcast counts
its buffer once per receiving rank, whatever tree the MPI library uses).
Imported only on the `--mpi` path: importing it initialises MPI.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import numpy as np
from mpi4py import MPI

from fast.mpi_poll import complete
from plumbing.errors import StallError

STATUS_BYTES = 4096  # one rank's status or end-of-run report as JSON, zero padded


class CommTimeout(StallError):
    """A collective did not complete by its deadline: a rank is stuck or gone (exit 3)."""


@dataclass
class ByteCounter:
    """Payload bytes this rank sent and received, in total and per kind of collective."""

    sent: int = 0
    received: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, sent: int, received: int) -> None:
        self.sent += sent
        self.received += received
        self.by_kind[kind] = self.by_kind.get(kind, 0) + sent + received


class Channel:
    """COMM_WORLD with deadline-polled non-blocking collectives, timing and byte counts."""

    def __init__(self, comm=None) -> None:
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.bytes = ByteCounter()
        self.seconds = 0.0  # wall seconds spent completing collectives

    # -- the collectives ----------------------------------------------------------------------

    def bcast(self, buf: np.ndarray, seconds: float, what: str) -> np.ndarray:
        """Rank 0's `buf` into every rank's `buf` (same shape and dtype everywhere)."""
        n = buf.nbytes
        self._wait(self.comm.Ibcast(buf, root=0), seconds, what,
                   n * (self.size - 1) if self.rank == 0 else 0, 0 if self.rank == 0 else n)
        return buf

    def gather(self, row: np.ndarray, seconds: float, what: str) -> np.ndarray | None:
        """Every rank's equal-sized `row`; rank 0 gets (size, *row.shape), the others None."""
        out = (np.empty((self.size, *row.shape), dtype=row.dtype) if self.rank == 0 else None)
        n = row.nbytes
        self._wait(self.comm.Igather(row, out, root=0), seconds, what,
                   0 if self.rank == 0 else n, n * (self.size - 1) if self.rank == 0 else 0)
        return out

    def gather_rows(self, data: np.ndarray, rows: list[range], seconds: float,
                    what: str) -> None:
        """Rank r's rows `rows[r]` of the 2-D `data` land in rank 0's `data`, in place."""
        width = data.shape[1]
        mine = rows[self.rank]
        dtype = MPI._typedict[data.dtype.char]
        if self.rank == 0:
            counts = [len(r) * width for r in rows]
            displs = [r.start * width for r in rows]
            req = self.comm.Igatherv(MPI.IN_PLACE, [data, counts, displs, dtype], root=0)
            self._wait(req, seconds, what, 0, sum(counts[1:]) * data.itemsize)
        else:
            block = data[mine.start:mine.stop]  # contiguous rows of a C-ordered array
            self._wait(self.comm.Igatherv([block, dtype], None, root=0), seconds, what,
                       block.nbytes, 0)

    def scatter_parts(self, parts: list[np.ndarray] | None, recv: np.ndarray, seconds: float,
                      what: str) -> np.ndarray:
        """Rank 0's `parts[r]` (flat, recv's dtype) into rank r's `recv`, which must fit it."""
        dtype = MPI._typedict[recv.dtype.char]
        if self.rank == 0:
            counts = [p.size for p in parts]
            send = np.concatenate([p.ravel() for p in parts]).astype(recv.dtype, copy=False)
            displs = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int).tolist()
            req = self.comm.Iscatterv([send, counts, displs, dtype], [recv, counts[0], dtype],
                                      root=0)
            self._wait(req, seconds, what, (sum(counts) - counts[0]) * recv.itemsize, 0)
        else:
            self._wait(self.comm.Iscatterv(None, [recv, recv.size, dtype], root=0), seconds,
                       what, 0, recv.nbytes)
        return recv

    def alltoallv(self, send: np.ndarray, send_counts: list[int], recv: np.ndarray,
                  recv_counts: list[int], seconds: float, what: str) -> np.ndarray:
        """Element counts per rank, both buffers laid out in rank order (self copy not counted)."""
        dtype = MPI._typedict[recv.dtype.char]
        sd = np.concatenate([[0], np.cumsum(send_counts)[:-1]]).astype(int).tolist()
        rd = np.concatenate([[0], np.cumsum(recv_counts)[:-1]]).astype(int).tolist()
        req = self.comm.Ialltoallv([send, send_counts, sd, dtype],
                                   [recv, recv_counts, rd, dtype])
        me = self.rank
        self._wait(req, seconds, what, (sum(send_counts) - send_counts[me]) * send.itemsize,
                   (sum(recv_counts) - recv_counts[me]) * recv.itemsize)
        return recv

    def allgather_ranges(self, data: np.ndarray, bounds: list[tuple[int, int]], seconds: float,
                         what: str) -> np.ndarray:
        """Rank r's data[bounds[r]] lands in every rank's flat `data`, in place."""
        dtype = MPI._typedict[data.dtype.char]
        counts = [hi - lo for lo, hi in bounds]
        displs = [lo for lo, _ in bounds]
        req = self.comm.Iallgatherv(MPI.IN_PLACE, [data, counts, displs, dtype])
        mine = counts[self.rank]
        self._wait(req, seconds, what, mine * (self.size - 1) * data.itemsize,
                   (sum(counts) - mine) * data.itemsize)
        return data

    def gather_ranges(self, mine: np.ndarray, full: np.ndarray | None,
                      bounds: list[tuple[int, int]], seconds: float, what: str) -> None:
        """Rank r's `mine` (its range bounds[r]) lands in rank 0's flat `full`, in place (rank
        0's own range must already be in `full`)."""
        dtype = MPI._typedict[mine.dtype.char]
        counts = [hi - lo for lo, hi in bounds]
        if self.rank == 0:
            req = self.comm.Igatherv(MPI.IN_PLACE, [full, counts, [b[0] for b in bounds], dtype],
                                     root=0)
            self._wait(req, seconds, what, 0, (sum(counts) - counts[0]) * mine.itemsize)
        else:
            self._wait(self.comm.Igatherv([mine, dtype], None, root=0), seconds, what,
                       mine.nbytes, 0)

    def scatter_ranges(self, full: np.ndarray | None, mine: np.ndarray,
                       bounds: list[tuple[int, int]], seconds: float, what: str) -> None:
        """Rank 0's full[bounds[r]] lands in rank r's `mine` (rank 0 copies its own)."""
        dtype = MPI._typedict[mine.dtype.char]
        counts = [hi - lo for lo, hi in bounds]
        if self.rank == 0:
            req = self.comm.Iscatterv([full, counts, [b[0] for b in bounds], dtype],
                                      MPI.IN_PLACE, root=0)
            self._wait(req, seconds, what, (sum(counts) - counts[0]) * mine.itemsize, 0)
            mine[:] = full[bounds[0][0]:bounds[0][1]]
        else:
            self._wait(self.comm.Iscatterv(None, [mine, dtype], root=0), seconds, what,
                       0, mine.nbytes)

    def gather_varied(self, row: np.ndarray, seconds: float, what: str) -> list | None:
        """Every rank's flat `row` (any length, one dtype); rank 0 gets the list in rank order."""
        sizes = self.gather(np.array([row.size], dtype=np.int64), seconds, what)
        dtype = MPI._typedict[row.dtype.char]
        if self.rank != 0:
            self._wait(self.comm.Igatherv([row, dtype], None, root=0), seconds, what,
                       row.nbytes, 0)
            return None
        counts = [int(n) for n in sizes.ravel()]
        out = np.empty(sum(counts), dtype=row.dtype)
        displs = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int).tolist()
        self._wait(self.comm.Igatherv([row, dtype], [out, counts, displs, dtype], root=0),
                   seconds, what, 0, (sum(counts) - counts[0]) * row.itemsize)
        return [out[d:d + n] for d, n in zip(displs, counts, strict=True)]

    def send(self, buf: np.ndarray, dest: int, seconds: float, what: str) -> None:
        """Point to point: `buf` to rank `dest` (a chain link of the position fold)."""
        self._wait(self.comm.Isend(buf, dest=dest, tag=_tag(what)), seconds, what,
                   buf.nbytes, 0)

    def recv(self, buf: np.ndarray, source: int, seconds: float, what: str) -> np.ndarray:
        """Point to point: rank `source`'s `buf` (same shape and dtype) into `buf`."""
        self._wait(self.comm.Irecv(buf, source=source, tag=_tag(what)), seconds, what,
                   0, buf.nbytes)
        return buf

    def irecv(self, buf: np.ndarray, source: int, seconds: float, what: str) -> Incoming:
        """Point to point, posted now and completed later by polling `Incoming.done()` from
        this same thread: `buf` is MPI's until then (an MPI chain rank computes meanwhile)."""
        request = self.comm.Irecv(buf, source=source, tag=_tag(what))
        return Incoming(self, request, buf.nbytes, seconds, what)

    def bcast_json(self, obj, seconds: float, what: str):
        """A small JSON-able object from rank 0 to everyone (length first, then the bytes)."""
        payload = json.dumps(obj).encode() if self.rank == 0 else b""
        size = self.bcast(np.array([len(payload)], dtype=np.int64), seconds, what)
        buf = (np.frombuffer(payload, dtype=np.uint8).copy() if self.rank == 0
               else np.empty(int(size[0]), dtype=np.uint8))
        self.bcast(buf, seconds, what)
        return json.loads(buf.tobytes().decode())

    def gather_json(self, obj, seconds: float, what: str) -> list | None:
        """One small JSON object per rank; rank 0 gets the list in rank order."""
        row = encode_status(obj)
        rows = self.gather(row, seconds, what)
        return None if rows is None else [decode_status(r) for r in rows]

    def abort(self, code: int) -> None:
        """End every process of the job with `code` (mpiexec exits with it)."""
        self.comm.Abort(code)

    # -- private ------------------------------------------------------------------------------

    def _wait(self, request, seconds: float, what: str, sent: int, received: int) -> None:
        """Completes `request` within `seconds` (fast.mpi_poll), then counts its bytes."""
        try:
            self.seconds += complete(request.Test, seconds, sent + received)
        except TimeoutError:
            raise self.timeout(what, seconds) from None
        self.bytes.add(what, sent, received)

    def timeout(self, what: str, seconds: float) -> CommTimeout:
        return CommTimeout(
            f"rank {self.rank}: MPI {what} did not complete within {seconds:.1f} s "
            f"({self.size} ranks): another rank is stuck or gone",
            {"rank": self.rank, "collective": what, "deadline_s": seconds})


class Incoming:
    """A posted receive with its deadline; `done()` tests it once (never blocks)."""

    def __init__(self, channel: Channel, request, nbytes: int, seconds: float,
                 what: str) -> None:
        self._ch, self._request, self._nbytes = channel, request, nbytes
        self._seconds, self._what = seconds, what
        self._start = time.monotonic()
        self.arrived: float | None = None  # perf_counter() when it completed

    def done(self) -> bool:
        """True once the data is in the buffer; CommTimeout once the deadline has passed."""
        if self.arrived is not None:
            return True
        if self._request.Test():
            self.arrived = time.perf_counter()
            self._ch.bytes.add(self._what, 0, self._nbytes)
            self._ch.seconds += time.monotonic() - self._start
            return True
        if time.monotonic() - self._start > self._seconds:
            raise self._ch.timeout(self._what, self._seconds)
        return False


def _tag(what: str) -> int:
    """A stable message tag per kind of point-to-point message (chains never mix kinds)."""
    return sum(what.encode()) % 30000 + 1


def encode_status(obj) -> np.ndarray:
    """JSON into a fixed STATUS_BYTES row (truncated messages keep valid JSON)."""
    text = json.dumps(obj).encode()
    if len(text) > STATUS_BYTES:
        text = json.dumps({"truncated": text[:STATUS_BYTES // 2].decode(errors="replace")}
                          ).encode()[:STATUS_BYTES]
    row = np.zeros(STATUS_BYTES, dtype=np.uint8)
    row[:len(text)] = np.frombuffer(text, dtype=np.uint8)
    return row


def decode_status(row: np.ndarray):
    text = row.tobytes().rstrip(b"\0").decode(errors="replace")
    return json.loads(text) if text else None
