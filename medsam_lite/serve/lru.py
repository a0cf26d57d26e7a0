"""A least-recently-used map bounded in bytes, safe across threads."""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Generic, Hashable, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ByteLRU(Generic[K, V]):
    """``put(key, value, nbytes)``; the least recently used entries go (``on_evict(key, value)``) when the total
    exceeds ``capacity`` bytes. An entry larger than the capacity is not kept."""

    def __init__(self, capacity: int, on_evict: Callable[[K, V], None] | None = None) -> None:
        self.capacity = capacity
        self.on_evict = on_evict
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: K) -> V | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[0]

    def put(self, key: K, value: V, nbytes: int) -> bool:
        """Keep ``value``; False (and nothing kept) when it alone exceeds the capacity."""
        evicted = []
        with self._lock:
            if key in self._entries:
                self._bytes -= self._entries.pop(key)[1]
            if nbytes > self.capacity:
                return False
            self._entries[key] = (value, nbytes)
            self._bytes += nbytes
            while self._bytes > self.capacity:
                old_key, (old_value, size) = self._entries.popitem(last=False)
                self._bytes -= size
                evicted.append((old_key, old_value))
        for old_key, old_value in evicted:
            if self.on_evict:
                self.on_evict(old_key, old_value)
        return True

    def pop(self, key: K) -> V | None:
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is None:
                return None
            self._bytes -= entry[1]
            return entry[0]

    def discard_where(self, predicate: Callable[[K], bool]) -> int:
        """Remove every entry whose key matches; how many."""
        with self._lock:
            keys = [k for k in self._entries if predicate(k)]
            for k in keys:
                self._bytes -= self._entries.pop(k)[1]
            return len(keys)

    def __contains__(self, key: K) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes
