"""Event brokers: carry an answer's deltas to its viewers, and stop requests to its generator.

``MemoryBroker`` serves one process. ``RedisBroker`` (used when ``REDIS_URL`` is set) lets several
gunicorn workers or hosts see the same events and stop signals: deltas go to a Redis stream per
message, so a late or reconnecting viewer can replay them (the viewers in the answer's own process
get them from its publisher directly); stop requests go over pub/sub.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)

KEEP_FINISHED = 60.0  # seconds a finished message's events stay readable (a viewer may be mid-read)
RETRY_EVERY = 0.5  # seconds between attempts to reach Redis again (publisher, reader, stop listener)
# Seconds the publisher and the reader let events gather before one round trip with Redis: with many
# streams, one XADD batch and one XREAD per interval instead of one per token (followers coalesce for
# 50 ms anyway, so viewers see no difference; Redis and the worker do far less work).
BATCH_EVERY = 0.01
EXPIRE_AGAIN = 60.0  # seconds: how often a running answer's stream has its TTL set again


@dataclass(frozen=True)
class Event:
    """A delta (text starting at character ``offset``) or the end of an answer."""

    kind: str  # "delta", "status" or "note" (JSON in ``text``), "done", or (inside the Redis publisher only) "reset"
    offset: int = 0
    text: str = ""
    at: float = 0.0  # when it was published (time.time()), for the broker-lag metric


StopHandler = Callable[[int], None]


class Broker(Protocol):
    """What the generator and the viewers need from a broker."""

    def open(self, message_id: int) -> None: ...

    def publish_delta(self, message_id: int, offset: int, text: str) -> None: ...

    def publish_done(self, message_id: int) -> None: ...

    def publish_status(self, message_id: int, status: dict) -> None: ...

    def publish_note(self, message_id: int, offset: int, note: dict) -> None: ...

    def last_status(self, message_id: int) -> dict | None: ...

    def read(self, message_id: int, cursor: Any, timeout: float) -> tuple[list[Event], Any]: ...

    def request_stop(self, message_id: int) -> None: ...

    def on_stop(self, handler: StopHandler) -> None: ...

    def listen_for_stops(self) -> None: ...

    def close(self) -> None: ...

    def publish_room(self, conversation_id: int, data: dict) -> None: ...

    def read_room(self, conversation_id: int, cursor: Any, timeout: float) -> tuple[list[dict], Any]: ...

    def presence_touch(self, conversation_id: int, key: str, value: str, ttl: float) -> None: ...

    def presence_drop(self, conversation_id: int, key: str) -> bool: ...

    def presence(self, conversation_id: int) -> list[str]: ...


ROOM_EVENTS_KEPT = 200  # a room's latest events, for a page that connects just after it was rendered
ROOMS_KEPT, ROOM_IDLE = 1000, 600.0  # in-process rooms past which those idle this many seconds are dropped


class _Channel:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.cond = threading.Condition()
        self.done_at: float | None = None


class _Room:
    def __init__(self) -> None:
        self.events: list[dict] = []
        self.dropped = 0  # events forgotten from the front: cursors are absolute indexes
        self.cond = threading.Condition()
        self.present: dict[str, tuple[str, float]] = {}  # key -> (value, expires at, monotonic)
        self.used = time.monotonic()


class MemoryBroker:
    """In-process broker: a list of events per message and a condition to wait on."""

    def __init__(self) -> None:
        self._channels: dict[int, _Channel] = {}
        self._stop_handler: StopHandler | None = None
        self._rooms: dict[int, _Room] = {}
        self._rooms_lock = threading.Lock()

    def _room(self, conversation_id: int) -> _Room:
        with self._rooms_lock:
            room = self._rooms.setdefault(conversation_id, _Room())
            room.used = time.monotonic()
            if len(self._rooms) > ROOMS_KEPT:  # forget rooms nobody has used for a while
                cutoff = room.used - ROOM_IDLE
                for key in [k for k, r in self._rooms.items() if r.used < cutoff]:
                    del self._rooms[key]
            return room

    def publish_room(self, conversation_id: int, data: dict) -> None:
        """Append a room event (keeping the latest few) and wake the room's followers."""
        room = self._room(conversation_id)
        with room.cond:
            room.events.append(data)
            if len(room.events) > ROOM_EVENTS_KEPT:
                room.dropped += len(room.events) - ROOM_EVENTS_KEPT
                del room.events[: len(room.events) - ROOM_EVENTS_KEPT]
            room.cond.notify_all()

    def read_room(self, conversation_id: int, cursor: Any, timeout: float) -> tuple[list[dict], Any]:
        """Room events after ``cursor`` (None: every event still kept), waiting up to ``timeout``."""
        room = self._room(conversation_id)
        with room.cond:
            index = max(cursor or 0, room.dropped)
            if room.dropped + len(room.events) <= index:
                room.cond.wait(timeout)
            events = room.events[index - room.dropped :]
            return events, room.dropped + len(room.events)

    def presence_touch(self, conversation_id: int, key: str, value: str, ttl: float) -> None:
        """Note ``key`` (a page or socket) as present for ``ttl`` seconds."""
        room = self._room(conversation_id)
        with room.cond:
            room.present[key] = (value, time.monotonic() + ttl)

    def presence_drop(self, conversation_id: int, key: str) -> bool:
        """Forget ``key``: its page was closed (False if it was not there)."""
        room = self._room(conversation_id)
        with room.cond:
            return room.present.pop(key, None) is not None

    def presence(self, conversation_id: int) -> list[str]:
        """The values of every key present now."""
        room = self._room(conversation_id)
        now = time.monotonic()
        with room.cond:
            for key in [k for k, (_v, until) in room.present.items() if until < now]:
                del room.present[key]
            return [value for value, _until in room.present.values()]

    def open(self, message_id: int) -> None:
        """A fresh channel (a continued answer starts over), before anyone can ask to read it."""
        self._channels[message_id] = _Channel()

    def publish_delta(self, message_id: int, offset: int, text: str) -> None:
        """Append a delta and wake the viewers."""
        self._append(message_id, Event("delta", offset, text, time.time()))

    def publish_status(self, message_id: int, status: dict) -> None:
        """Tell the viewers how the answer stands before text comes (e.g. retrying)."""
        self._append(message_id, Event("status", text=json.dumps(status)))

    def publish_note(self, message_id: int, offset: int, note: dict) -> None:
        """A note the assistant saved at character ``offset`` of the answer (its own channel, not text)."""
        self._append(message_id, Event("note", offset, json.dumps(note)))

    def last_status(self, message_id: int) -> dict | None:
        """The status the answer is in, if the last thing published was one."""
        channel = self._channels.get(message_id)
        last = channel.events[-1] if channel and channel.events else None
        return json.loads(last.text) if last and last.kind == "status" else None

    def publish_done(self, message_id: int) -> None:
        """Mark the answer finished and drop channels finished long ago."""
        channel = self._append(message_id, Event("done"))
        channel.done_at = time.monotonic()
        cutoff = channel.done_at - KEEP_FINISHED
        for key, other in list(self._channels.items()):
            if other.done_at is not None and other.done_at < cutoff:
                self._channels.pop(key, None)

    def _append(self, message_id: int, event: Event) -> _Channel:
        channel = self._channels.get(message_id)  # not setdefault: a _Channel (a lock, a condition) per delta adds up
        if channel is None:
            channel = self._channels.setdefault(message_id, _Channel())
        with channel.cond:
            channel.events.append(event)
            channel.cond.notify_all()
        return channel

    def read(self, message_id: int, cursor: Any, timeout: float) -> tuple[list[Event], Any]:
        """Events after ``cursor`` (None: from the start), waiting up to ``timeout`` for one."""
        index = cursor or 0
        channel = self._channels.get(message_id)
        if channel is None:  # not generated here: the caller falls back to the database
            time.sleep(min(timeout, 0.25))
            return [], index
        with channel.cond:
            if len(channel.events) <= index:
                channel.cond.wait(timeout)
            events = channel.events[index:]
        return events, index + len(events)

    def request_stop(self, message_id: int) -> None:
        """Stop the answer; it can only be running in this process."""
        if self._stop_handler:
            self._stop_handler(message_id)

    def on_stop(self, handler: StopHandler) -> None:
        """Register the generator's stop handler."""
        self._stop_handler = handler

    def listen_for_stops(self) -> None:
        """Nothing to do: stops are delivered by direct call."""

    def close(self) -> None:
        """Nothing to do."""


class RedisBroker:
    """Cross-process broker on Redis streams (events) and pub/sub (stops)."""

    STOP_CHANNEL = "chatapp:stop"
    TTL_RUNNING = 24 * 3600
    TTL_FINISHED = int(KEEP_FINISHED)

    def __init__(self, url: str, prefix: str = "chatapp") -> None:
        import redis

        # Named, so `CLIENT LIST` shows this app's connections (a small constant per process).
        self.redis = redis.Redis.from_url(url, decode_responses=True, health_check_interval=30, client_name=prefix)
        self.prefix = prefix
        self.stop_channel = f"{prefix}:stop"
        self._stop_handler: StopHandler | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._ttl_set: dict[int, float] = {}  # the publisher's: when each running answer's TTL was last set
        self._pid: int | None = None
        self._listener_pid: int | None = None
        self._reader_pid: int | None = None
        self._reader_instance: _Reader
        self._lock = threading.Lock()
        self._closed = threading.Event()  # set at shutdown: threads that lose Redis then end, quietly

    def _key(self, message_id: int) -> str:
        return f"{self.prefix}:events:{message_id}"

    def publish_room(self, conversation_id: int, data: dict) -> None:
        """Add a room event to the room's stream (its latest few are kept), for every process."""
        key = f"{self.prefix}:room:{conversation_id}"
        pipe = self.redis.pipeline(transaction=False)
        pipe.xadd(key, {"k": "room", "o": 0, "t": json.dumps(data)}, maxlen=ROOM_EVENTS_KEPT, approximate=True)
        pipe.expire(key, self.TTL_RUNNING)
        pipe.execute()

    def read_room(self, conversation_id: int, cursor: Any, timeout: float) -> tuple[list[dict], Any]:
        """Room events after ``cursor``, through this process's single reader."""
        events, cursor = self._reader().read(f"{self.prefix}:room:{conversation_id}", cursor, timeout)
        return [json.loads(event.text) for event in events], cursor

    def _presence_key(self, conversation_id: int, key: str) -> str:
        return f"{self.prefix}:presence:{conversation_id}:{key}"

    def presence_touch(self, conversation_id: int, key: str, value: str, ttl: float) -> None:
        """A key with a TTL per page or socket: a process that dies leaves nothing behind for long."""
        self.redis.set(self._presence_key(conversation_id, key), value, px=int(ttl * 1000))

    def presence_drop(self, conversation_id: int, key: str) -> bool:
        """Delete the page's key (False if it was not there)."""
        return bool(self.redis.delete(self._presence_key(conversation_id, key)))

    def presence(self, conversation_id: int) -> list[str]:
        """The values of the room's live presence keys (from every process and host)."""
        keys = list(self.redis.scan_iter(match=self._presence_key(conversation_id, "*"), count=200))
        return [str(value) for value in self.redis.mget(keys) if value is not None] if keys else []

    def open(self, message_id: int) -> None:
        """This process generates the message: its viewers here get its events from this process's
        publisher, and earlier events are forgotten (a continued answer starts over)."""
        self._publish(message_id, Event("reset"), start=True)

    def publish_delta(self, message_id: int, offset: int, text: str) -> None:
        """Queue a delta; the publisher thread sends queued deltas in batches."""
        self._publish(message_id, Event("delta", offset, text, time.time()))

    def publish_status(self, message_id: int, status: dict) -> None:
        """Queue a status (e.g. retrying), seen by the viewers in every process."""
        self._publish(message_id, Event("status", text=json.dumps(status)))

    def publish_note(self, message_id: int, offset: int, note: dict) -> None:
        """Queue a note the assistant saved, seen by the viewers in every process."""
        self._publish(message_id, Event("note", offset, json.dumps(note)))

    def _publish(self, message_id: int, event: Event, start: bool = False) -> None:
        """Queue the event for this process's viewers and Redis (the other processes'); ``start``: the
        answer (re)starts here, and its viewers here are fed by the publisher from now on."""
        self._ensure_publisher()
        if start:
            self._reader().start_local(self._key(message_id))
        self._queue.put((message_id, event))

    def last_status(self, message_id: int) -> dict | None:
        """The status the answer is in, if the last entry of its stream is one (for pages without JS)."""
        try:
            entries: Any = self.redis.xrevrange(self._key(message_id), count=1)
        except Exception:
            log.warning("could not read the status of message %s from Redis", message_id, exc_info=True)
            return None
        for _, fields in entries:
            if fields.get("k") == "status":
                return json.loads(fields["t"])
        return None

    def publish_done(self, message_id: int) -> None:
        """Queue the end marker (after any queued deltas)."""
        self._publish(message_id, Event("done"))

    def _ensure_publisher(self) -> None:
        # Threads do not survive fork (gunicorn --preload): start one per process.
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._queue = queue.SimpleQueue()
                    threading.Thread(target=self._publish_forever, name="redis-publisher", daemon=True).start()
                    self._pid = os.getpid()

    def _publish_forever(self) -> None:
        # Natural batching: whatever queued up while the last batch was sent goes out in one
        # round trip, and consecutive deltas of one message merge into one stream entry. A batch
        # Redis did not take (it restarted, say) is kept and sent again with what queued since, in
        # order: viewers go on once Redis is back, missing nothing (a repeated entry is harmless,
        # they skip text they have by its offset).
        # At most one round trip per BATCH_EVERY: what the other answers write meanwhile joins it. An
        # event after a quiet spell goes at once (a first token does not wait for a batch to fill).
        batch: list[tuple[int, Event]] = []
        last_sent = 0.0
        while True:
            fresh = len(batch)  # what a send that failed kept went to this process's viewers already
            if not batch:
                batch.append(self._queue.get())
                if (wait := last_sent + BATCH_EVERY - time.monotonic()) > 0:
                    time.sleep(wait)
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._reader().feed([(self._key(m), e) for m, e in batch[fresh:]])  # viewers here: now, once
            try:
                self._send(batch)
                batch = []
                last_sent = time.monotonic()
            except Exception as exc:
                if self._closed.is_set():
                    return
                log.warning("could not publish %d events to Redis (%s); retrying", len(batch), exc)
                time.sleep(RETRY_EVERY)

    def _send(self, batch: list[tuple[int, Event]]) -> None:
        """One pipeline: per message, its events in order, consecutive deltas merged into one entry."""
        merged: dict[int, list[Event]] = {}
        for message_id, event in batch:
            events = merged.setdefault(message_id, [])
            last = events[-1] if events else None
            if last and event.kind == last.kind == "delta" and last.offset + len(last.text) == event.offset:
                events[-1] = Event("delta", last.offset, last.text + event.text, last.at)
            else:
                events.append(event)
        pipe = self.redis.pipeline(transaction=False)
        now = time.monotonic()
        # An answer whose TTL was set twice EXPIRE_AGAIN ago has had no event since it was due: it ended
        # without a "done" from this process. Forget it (should it go on, its TTL is set anew).
        ttl_set = {message_id: at for message_id, at in self._ttl_set.items() if now - at < 2 * EXPIRE_AGAIN}
        for message_id, events in merged.items():
            key = self._key(message_id)
            for event in events:
                # A "reset" (a continued answer starts over) is an entry too: readers drop what they hold.
                pipe.xadd(key, {"k": event.kind, "o": event.offset, "t": event.text, "a": event.at})
            if events[-1].kind == "done":
                pipe.expire(key, self.TTL_FINISHED)
                ttl_set.pop(message_id, None)
            elif message_id not in ttl_set or now - ttl_set[message_id] >= EXPIRE_AGAIN:
                # Not with every batch (half of all commands were EXPIREs): when the stream is new, and
                # again now and then, which also covers a Redis restart that lost the key's TTL.
                pipe.expire(key, self.TTL_RUNNING)
                ttl_set[message_id] = now
        pipe.execute()
        self._ttl_set = ttl_set  # only once Redis took the batch: a batch sent again sets them again

    def read(self, message_id: int, cursor: Any, timeout: float) -> tuple[list[Event], Any]:
        """Events after ``cursor`` (None: from the start), waiting up to ``timeout`` for one.

        Every follower in this process reads from the process's single reader (``_Reader``), so the
        number of Redis connections does not grow with the number of open streams.
        """
        return self._reader().read(self._key(message_id), cursor, timeout)

    def _reader(self) -> _Reader:
        if self._reader_pid != os.getpid():
            with self._lock:
                if self._reader_pid != os.getpid():
                    self._reader_instance = _Reader(self.redis, self._closed)
                    self._reader_pid = os.getpid()
        return self._reader_instance

    def request_stop(self, message_id: int) -> None:
        """Tell every process; the one generating the answer stops it."""
        self.redis.publish(self.stop_channel, str(message_id))

    def on_stop(self, handler: StopHandler) -> None:
        """Register the generator's stop handler."""
        self._stop_handler = handler

    def listen_for_stops(self) -> None:
        """Start this process's stop listener (once per process); returns once subscribed."""
        if self._listener_pid == os.getpid():
            return
        with self._lock:
            if self._listener_pid == os.getpid():
                return
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(self.stop_channel)
            threading.Thread(target=self._listen, args=(pubsub,), name="redis-stops", daemon=True).start()
            self._listener_pid = os.getpid()

    def close(self) -> None:
        """Shutting down: this process's Redis threads end at their next failure instead of retrying."""
        self._closed.set()

    def _listen(self, pubsub: Any) -> None:
        while True:
            try:
                message = pubsub.get_message(timeout=5.0)
                if message and self._stop_handler:
                    self._stop_handler(int(message["data"]))
            except Exception as exc:
                if self._closed.is_set():
                    return
                log.warning("Redis stop listener failed (%s); resubscribing", exc)
                time.sleep(RETRY_EVERY)
                with contextlib.suppress(Exception):
                    pubsub.subscribe(self.stop_channel)


class _Followed:
    """What this process has of one answer's (or room's) stream, shared by all its followers here."""

    def __init__(self, lock: threading.Lock, local: bool = False) -> None:
        self.events: list[Event] = []
        self.generation = 0  # bumped by a reset (a continued answer), so cursors start over
        self.last_id = "0-0"
        self.last_read = time.monotonic()
        self.dropped = 0  # events forgotten from the front (long-lived room streams): cursors stay absolute
        self.local = local  # generated in this process: fed by its publisher (``feed``), not by XREAD
        self.arrived = threading.Condition(lock)  # its followers wait here, woken only by its own events

    def add(self, event: Event) -> None:
        if event.kind == "reset":
            self.events = []
            self.dropped = 0
            self.generation += 1
        else:
            self.events.append(event)


class _Reader:
    """One thread per process fetches the events of every followed stream with a single ``XREAD``.

    An answer generated in this process is not read back from Redis: the publisher hands each batch
    of its events to the followers here as it takes the batch (``feed``), before sending it, so they
    do not wait for the round trips to Redis and back (under a burst of sends, 50-80 ms of a first
    token), and they keep the rhythm of the batches (waking a follower for every token made the page's
    largest gaps longer). Followers wait on their stream's condition. A stream joins the next
    ``XREAD`` at once: the reader's blocking call is interrupted with ``CLIENT UNBLOCK``. A stream
    nobody has read for ``FORGET_AFTER`` seconds is dropped, and a local one nobody here has read
    for ``UNREAD_LOCAL`` seconds as soon as it has a new event (its viewers are elsewhere; it is then
    read from Redis by whoever follows it here later).
    """

    BLOCK_MS = 1000
    FORGET_AFTER = 30.0
    # An answer of this process that no follower here has read for this long keeps no events here (a
    # follower reads at least once a second): its viewers are in other processes, or there are none.
    UNREAD_LOCAL = 10.0

    def __init__(self, redis: Any, closed: threading.Event) -> None:
        self.redis = redis
        self.closed = closed
        self.streams: dict[str, _Followed] = {}
        self.lock = threading.Lock()
        self.wanted = threading.Condition(self.lock)  # the reader waits here for a stream to read from Redis
        self.client_id: int | None = None
        self.blocked = False
        self.unblocking = threading.Lock()  # one CLIENT UNBLOCK at a time: one connection, not one per follower
        threading.Thread(target=self._run, name="redis-reader", daemon=True).start()

    def start_local(self, key: str) -> None:
        """The answer (re)starts in this process: from now on its stream here is fed by ``feed``."""
        with self.lock:
            self._forget_idle()
            followed = self.streams.get(key)
            if followed is None:
                followed = self.streams[key] = _Followed(self.lock, local=True)
            followed.local = True  # an XREAD under way may still bring its earlier entries: ignored

    def feed(self, batch: list[tuple[str, Event]]) -> None:
        """A batch of the events this process's generators published, to their followers here."""
        with self.lock:
            woken = []
            unread = time.monotonic() - self.UNREAD_LOCAL
            for key, event in batch:
                followed = self.streams.get(key)
                if followed is None or not followed.local:
                    continue  # forgotten: a follower here now reads it from Redis
                if followed.last_read < unread:
                    del self.streams[key]  # nobody here follows it: do not keep its events
                    continue
                followed.add(event)
                woken.append(followed)
            for followed in woken:
                followed.arrived.notify_all()

    def read(self, key: str, cursor: Any, timeout: float) -> tuple[list[Event], Any]:
        """Events of ``key`` after ``cursor`` (``(generation, index)``), waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        blocked_client = None
        with self.lock:
            followed = self.streams.get(key)
            if followed is None:
                followed = self.streams[key] = _Followed(self.lock)
                self.wanted.notify()
                blocked_client = self.client_id if self.blocked else None
                self.blocked = False  # one interruption per XREAD is enough
        if blocked_client is not None:
            with self.unblocking, contextlib.suppress(Exception):  # XREAD returns now and takes in the new key
                self.redis.client_unblock(blocked_client)
        with self.lock:
            followed.last_read = time.monotonic()
            generation, index = cursor or (followed.generation, 0)
            if generation != followed.generation:
                index = 0  # reset since: replay; the follower skips text it already has by offset
            index = max(index, followed.dropped)
            while followed.dropped + len(followed.events) <= index and (left := deadline - time.monotonic()) > 0:
                followed.arrived.wait(left)
            events = followed.events[index - followed.dropped :]
            return events, (followed.generation, followed.dropped + len(followed.events))

    def _run(self) -> None:
        connection = self.redis.connection_pool.make_connection()  # its own, never shared
        while True:
            try:
                if self.client_id is None:
                    connection.send_command("CLIENT", "ID")
                    self.client_id = int(connection.read_response())
                self._read_once(connection)
            except Exception as exc:
                if self.closed.is_set():
                    return
                log.warning("Redis reader failed (%s); reconnecting", exc)
                connection.disconnect()
                self.client_id = None
                time.sleep(RETRY_EVERY)

    def _read_once(self, connection: Any) -> None:
        with self.lock:
            self._forget_idle()
            while not (positions := {key: f.last_id for key, f in self.streams.items() if not f.local}):
                self.wanted.wait()
                self._forget_idle()
            self.blocked = True
        try:
            args = ["XREAD", "COUNT", 1000, "BLOCK", self.BLOCK_MS, "STREAMS", *positions, *positions.values()]
            connection.send_command(*args)
            reply = connection.read_response()
        finally:
            with self.lock:
                self.blocked = False
        if not reply:
            return
        self._take(reply)
        time.sleep(BATCH_EVERY)  # let events gather: one XREAD per interval, not one per token

    def _take(self, reply: Any) -> None:
        """Hand an XREAD's entries to the followers of their streams."""
        with self.lock:
            for key, entries in _pairs(reply):
                followed = self.streams.get(key)
                if followed is None or followed.local:
                    continue
                for entry_id, fields in entries:
                    followed.last_id = entry_id
                    followed.add(Event(fields["k"], int(fields["o"]), fields["t"], float(fields.get("a", 0))))
                if key.split(":")[-2] == "room" and len(followed.events) > ROOM_EVENTS_KEPT:
                    extra = len(followed.events) - ROOM_EVENTS_KEPT
                    followed.dropped += extra
                    del followed.events[:extra]
                followed.arrived.notify_all()

    def _forget_idle(self) -> None:
        cutoff = time.monotonic() - self.FORGET_AFTER
        for key in [key for key, followed in self.streams.items() if followed.last_read < cutoff]:
            del self.streams[key]


def _pairs(reply: Any) -> list[tuple[str, list[tuple[str, dict]]]]:
    """XREAD's reply as (key, [(entry id, fields)]), whichever protocol version answered."""
    items = reply.items() if isinstance(reply, dict) else reply
    pairs = []
    for key, entries in items:
        decoded = []
        for entry_id, flat in entries:
            fields = flat if isinstance(flat, dict) else dict(zip(flat[::2], flat[1::2], strict=True))
            decoded.append((entry_id, fields))
        pairs.append((key, decoded))
    return pairs


def make_broker(redis_url: str | None, prefix: str = "chatapp") -> Broker:
    """A Redis broker when a URL is configured, else the in-process one."""
    return RedisBroker(redis_url, prefix) if redis_url else MemoryBroker()
