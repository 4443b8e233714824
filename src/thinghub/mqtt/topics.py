"""Topic names and topic filters: validation and `+`/`#` wildcard matching (MQTT 3.1.1 §4.7)."""

from __future__ import annotations

__all__ = [
    "TopicError",
    "is_valid_topic_filter",
    "is_valid_topic_name",
    "topic_matches",
    "validate_topic_filter",
    "validate_topic_name",
]

# These checks are structural. The byte-length limit (codec.MAX_TOPIC_BYTES) is enforced by the
# codec, which already holds the encoded bytes; UTF-8 validity is a property of the wire bytes
# (§1.5.3) and is checked there too.


class TopicError(ValueError):
    """A topic name or filter breaks the rules of §4.7.

    Attributes:
        reason: What is wrong, citing the spec section.
        topic: The offending topic name or filter.
    """

    def __init__(self, reason: str, topic: str) -> None:
        super().__init__(f"{reason}: {topic!r}")
        self.reason = reason
        self.topic = topic


def validate_topic_name(name: str) -> None:
    """Check a topic name, as used in PUBLISH and in the will (§4.7).

    Raises:
        TopicError: The name is empty, contains U+0000 or contains a wildcard.
    """
    if not name:
        raise TopicError("topic name is empty (§4.7.3-1)", name)
    if "+" in name or "#" in name:
        raise TopicError("topic name contains a wildcard (§4.7.1-1)", name)
    if "\x00" in name:
        raise TopicError("topic name contains U+0000 (§4.7.3-2)", name)


def validate_topic_filter(topic_filter: str) -> None:
    """Check a topic filter, as used in SUBSCRIBE and UNSUBSCRIBE (§4.7).

    Raises:
        TopicError: The filter is empty, contains U+0000, or misplaces a wildcard.
    """
    if not topic_filter:
        raise TopicError("topic filter is empty (§4.7.3-1)", topic_filter)
    if "\x00" in topic_filter:
        raise TopicError("topic filter contains U+0000 (§4.7.3-2)", topic_filter)
    if "+" not in topic_filter and "#" not in topic_filter:
        return
    levels = topic_filter.split("/")
    last = len(levels) - 1
    for index, level in enumerate(levels):
        if "#" in level:
            # §4.7.1-2: '#' stands alone as the last level ("sport/#", "#").
            if level != "#" or index != last:
                raise TopicError("'#' must be the whole last level (§4.7.1-2)", topic_filter)
        elif "+" in level and level != "+":
            # §4.7.1-3: '+' occupies a whole level ("sport/+/player1", never "sport+").
            raise TopicError("'+' must be a whole level (§4.7.1-3)", topic_filter)


def is_valid_topic_name(name: str) -> bool:
    """Return whether `name` is a valid topic name (see validate_topic_name)."""
    try:
        validate_topic_name(name)
    except TopicError:
        return False
    return True


def is_valid_topic_filter(topic_filter: str) -> bool:
    """Return whether `topic_filter` is a valid topic filter (see validate_topic_filter)."""
    try:
        validate_topic_filter(topic_filter)
    except TopicError:
        return False
    return True


def topic_matches(topic_filter: str, name: str) -> bool:
    """Return whether a valid topic filter matches a valid topic name (§4.7.1, §4.7.2).

    `+` matches exactly one level, which may be empty; `#` matches the parent level and any
    number of child levels ("sport/#" matches "sport"); a filter that starts with a wildcard
    does not match a name that starts with `$` (§4.7.2-1). Both arguments are assumed valid.
    """
    if name[:1] == "$" and topic_filter[:1] in ("+", "#"):
        return False
    if "+" not in topic_filter and "#" not in topic_filter:
        return topic_filter == name
    filter_levels = topic_filter.split("/")
    name_levels = name.split("/")
    count = len(name_levels)
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True
        if index >= count:
            return False
        if level != "+" and level != name_levels[index]:
            return False
    return len(filter_levels) == count
