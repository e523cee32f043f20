"""moto server, with DynamoDB's Query reading one partition, as DynamoDB does.

moto answers a Query on a table's own key by sorting and scanning every item of the table
(`Table.all_items`), so each Query costs time in proportion to the whole table: with a month
of usage for 10 000 customers (900 000 items) a single Query takes seconds and a billing run
takes hours. DynamoDB reads only the partition named by the key condition. Here a base-table
Query gets only its partition's items (sorted by sort key, as moto sorts them); everything
moto does after that (key conditions, filters, pages, limits, consistency) is unchanged.
An index (GSI) Query gets the items whose index hash key matches, unsorted by the table's key
(moto sorts them by the index's keys afterwards anyway), instead of the whole table sorted.
Scans keep moto's own path.

SQS: moto's SendMessage builds every queue attribute (the approximate counts walk every
message of the queue, converting times) to read one flag, so each send costs time in
proportion to the queue's backlog: a billing run of 10 000 customers, whose notices pile up
unconsumed in the bench, slows to under one invoice a second. Here a send reads only the FIFO
flags it needs. ReceiveMessage asked for the retention period of every message it hands out
through GetQueueAttributes, which built every attribute three times per name: each receive
walked the backlog some thirty times (a 10 000-job billing queue took a second per receive).
Here the retention period is read from the queue, and GetQueueAttributes builds the
attributes once per call; the values it answers are unchanged.

Garbage collection: moto's heap grows with traffic (a 10-minute soak at 10 requests/s takes
it past 4 GB), and every full collection walks all of it while every caller waits: the soak's
intake p99 climbed from 65 ms to 6.4 s over ten minutes in pauses that grew with the heap.
Full collections are made rare here (the young generations are still collected); memory grew
as fast with them as without, and the p99 stayed under 110 ms.

Run instead of `moto_server`: `python infra/moto_server.py -H 127.0.0.1 -p 4599`.
"""

import gc
import sys
import threading

from moto.dynamodb.models.table import Table
from moto.core.utils import unix_time
from moto.server import main
from moto.sqs.models import Queue, SQSBackend

_partition = threading.local()
_all_items = Table.all_items
_query = Table.query


def _partition_items(self):
    key = getattr(_partition, "key", None)
    gsi = getattr(_partition, "gsi", None)
    if gsi is not None and self.range_key_attr:
        attr, value = gsi
        return [
            item
            for hash_set in self.items.values()
            for item in hash_set.values()
            if _same(item.attrs.get(attr), value)
        ]
    if key is None or not self.range_key_attr:
        return _all_items(self)
    items = self.items[key].values() if key in self.items else ()
    return sorted(items, key=lambda item: item.range_key)


def _same(found, value):
    return found is not None and found == value


def _index_hash_attr(table, name):
    for index in list(table.global_indexes) + list(table.indexes):
        if index.name == name:
            hashes = [k["AttributeName"] for k in index.schema if k["KeyType"] == "HASH"]
            return hashes[0] if len(hashes) == 1 else None
    return None


def _partition_query(self, *args, **kwargs):
    # Table.query(hash_key, range_comparison, range_objs, limit, exclusive_start_key,
    #             scan_index_forward, projection_expressions, index_name=None, ...)
    hash_key = args[0] if args else kwargs.get("hash_key")
    index_name = args[7] if len(args) > 7 else kwargs.get("index_name")
    if hash_key is None:
        return _query(self, *args, **kwargs)
    if index_name is not None:
        attr = _index_hash_attr(self, index_name)
        if attr is None:
            return _query(self, *args, **kwargs)
        _partition.gsi = (attr, hash_key)
        try:
            return _query(self, *args, **kwargs)
        finally:
            _partition.gsi = None
    _partition.key = hash_key
    try:
        return _query(self, *args, **kwargs)
    finally:
        _partition.key = None


_sending = threading.local()
_queue_attributes = Queue.attributes.fget
_send_message = SQSBackend.send_message


_built = threading.local()
_get_queue_attributes = SQSBackend.get_queue_attributes


def _attributes(self):
    cache = getattr(_built, "cache", None)
    if cache is not None:
        if id(self) not in cache:
            cache[id(self)] = _queue_attributes(self)
        return cache[id(self)]
    if getattr(_sending, "on", False):
        # send_message and add_message read only ContentBasedDeduplication.
        if not self.fifo_queue:
            return {}
        # As moto's own property renders it: a bool as "true"/"false".
        value = self.content_based_deduplication
        return {"ContentBasedDeduplication": str(value).lower() if isinstance(value, bool) else value}
    return _queue_attributes(self)


def _send(self, *args, **kwargs):
    outer = getattr(_sending, "on", False)
    _sending.on = True
    try:
        return _send_message(self, *args, **kwargs)
    finally:
        _sending.on = outer


def _get_attributes(self, *args, **kwargs):
    outer = getattr(_built, "cache", None)
    _built.cache = {} if outer is None else outer
    try:
        return _get_queue_attributes(self, *args, **kwargs)
    finally:
        _built.cache = outer


def _retained(self, queue_name, message):
    retention_period = int(self.get_queue(queue_name).message_retention_period)
    return retention_period + message.sent_timestamp / 1000 > unix_time()


Table.all_items = _partition_items
Table.query = _partition_query
Queue.attributes = property(_attributes)
SQSBackend.send_message = _send
SQSBackend.get_queue_attributes = _get_attributes
SQSBackend.is_message_valid_based_on_retention_period = _retained

if __name__ == "__main__":
    gc.set_threshold(700, 10, 1_000_000_000)
    sys.exit(main())
