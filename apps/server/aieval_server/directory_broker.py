"""The embedded default's broker: kombu's directory queue, with messages that appear only once complete.

kombu's filesystem transport creates a message file and then writes it, while its consumer renames and reads
any `*.<queue>.msg` it lists without taking the writer's lock. A consumer polling in between (every 0.1 s
here) reads an empty file, fails to decode it and the message is gone: the job stays "queued" until the
sweeper resends it minutes later. Here a message is written under a name the consumer ignores and renamed
into place, which is atomic on one filesystem.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic

from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        staging = final + ".part"  # the consumer only takes names ending in ".<queue>.msg"
        try:
            with open(staging, "wb") as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.replace(staging, final)
        except OSError as exc:
            raise filesystem.ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
