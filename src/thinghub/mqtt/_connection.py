"""What both sides of a session share: decoder, outgoing buffer, packet ids and QoS bookkeeping."""

# Outgoing QoS 1 (§4.3.2): a packet id (1..65535, wrapping, skipping ids in use) is assigned
# when the PUBLISH is actually written. The server keeps at most `max_inflight` publishes
# awaiting their PUBACK and queues the rest (server.py); inflight() holds those sent and not
# acknowledged, with their ids, for redelivery on the client's next connection (§4.4).
#
# Incoming QoS 2 (§4.3.3), which the Azure SDK never uses but a generic client may: the PUBLISH is
# reported once; puback() then answers PUBREC instead of PUBACK, a re-sent duplicate is answered
# (PUBREC again) without a second event, and PUBREL is answered with PUBCOMP by the session.
# Neither side ever publishes with QoS 2, so PUBREC/PUBCOMP from the peer are violations
# (states.py).

from __future__ import annotations

from .codec import Decoder, encode
from .errors import LocalProtocolError, RemoteProtocolError
from .events import PublishReceived
from .packets import Packet, Puback, Pubcomp, Publish, Pubrec, Pubrel

__all__ = ["MAX_PACKET_ID", "Connection"]

#: The largest packet id (§2.3.1): ids are 1..65535.
MAX_PACKET_ID = 0xFFFF


class Connection:
    """Decoder, outgoing buffer, packet ids and incoming QoS 2 bookkeeping for either side."""

    __slots__ = (
        "_decoder",
        "_inflight",
        "_next_packet_id",
        "_outgoing",
        "_qos2",
    )

    def __init__(self, max_packet_bytes: int) -> None:
        self._decoder = Decoder(max_packet_bytes=max_packet_bytes)
        self._outgoing: list[bytes] = []
        self._next_packet_id = 1
        # Sent QoS 1 publishes awaiting PUBACK, by packet id, in send order.
        self._inflight: dict[int, Publish] = {}
        # Incoming QoS 2 publishes by packet id (§4.3.3): False while reported but not yet
        # answered, True once PUBREC was sent (awaiting PUBREL). One dict, not two sets: every
        # connection has it, few ever use it.
        self._qos2: dict[int, bool] = {}

    @property
    def buffered_bytes(self) -> int:
        """Bytes received and not yet decoded into packets."""
        return self._decoder.buffered_bytes

    def data_to_send(self) -> bytes:
        """Take every byte queued for the peer (b"" when there is none), in order."""
        out = self._outgoing
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return data

    def inflight(self) -> tuple[Publish, ...]:
        """QoS 1 publishes sent but not acknowledged, oldest first, with their packet ids."""
        return tuple(self._inflight.values())

    def _send(self, packet: Packet) -> None:
        self._outgoing.append(encode(packet))

    def _is_packet_id_used(self, packet_id: int) -> bool:
        return packet_id in self._inflight

    def _allocate_packet_id(self) -> int:
        # §2.3.1: a new packet must use an id not in use; ids wrap from 65535 back to 1.
        packet_id = self._next_packet_id
        for _ in range(MAX_PACKET_ID):
            if not self._is_packet_id_used(packet_id):
                self._next_packet_id = packet_id % MAX_PACKET_ID + 1
                return packet_id
            packet_id = packet_id % MAX_PACKET_ID + 1
        raise LocalProtocolError("all 65535 packet ids are in use")

    def _send_publish(self, publish: Publish) -> Publish:
        """Send a QoS 0 publish as is, or give a QoS 1 publish an id and track it."""
        if publish.qos:
            packet_id = self._allocate_packet_id()
            publish = Publish(publish.topic, publish.payload, 1, publish.retain, False, packet_id)
            self._outgoing.append(encode(publish))
            self._inflight[packet_id] = publish
        else:
            self._outgoing.append(encode(publish))
        return publish

    def _incoming_publish(self, publish: Publish) -> PublishReceived | None:
        """Report an incoming publish once; None for a QoS 2 duplicate (§4.3.3)."""
        packet_id = publish.packet_id
        if publish.qos == 2 and packet_id is not None:
            awaiting_pubrel = self._qos2.get(packet_id)
            if awaiting_pubrel is False:  # reported, not answered yet
                return None
            if awaiting_pubrel:
                self._send(Pubrec(packet_id))
                return None
            self._qos2[packet_id] = False
        return PublishReceived(publish)

    def _answer_publish(self, packet_id: int) -> None:
        if self._qos2.get(packet_id) is False:
            self._qos2[packet_id] = True
            self._send(Pubrec(packet_id))
        else:
            self._send(Puback(packet_id))

    def _incoming_pubrel(self, pubrel: Pubrel) -> RemoteProtocolError | None:
        packet_id = pubrel.packet_id
        if self._qos2.get(packet_id) is False:
            return RemoteProtocolError(
                f"PUBREL for packet id {packet_id} before our PUBREC (§4.3.3)"
            )
        # §4.3.3: answer PUBCOMP even for an id we do not know (state lost across connections).
        self._qos2.pop(packet_id, None)
        self._send(Pubcomp(packet_id))
        return None
