"""Each responder's ICMP-error budget: learned online from answers and misses, spent by priority.

Routers answer only so many ICMP errors per second to one source (Linux: one token per
``icmp_ratelimit`` ms, a burst of 6; IPv6 scales it with the route's prefix). Every flow
and target whose probes expire at one router shares that router's one budget, so the
tracer asks this module before each probe that expires at a known router:

* A router is presumed unlimited until it shows *competing misses*: probes of flows known
  to get past it went unanswered while it answered other probes sent within a second of
  them. Two such misses and it is ``limited``.
* A limited router gets a token-bucket model. Each miss says its bucket was empty then,
  so the answers between two misses over the time between them is its rate; until two
  misses are far enough apart, one per second (Linux's default). The model's tokens are
  emptied at each miss. While probes are being held back, one routine probe every
  ``TRY_NS`` goes without a token; when the router answers it, the rate was too low and
  rises by a quarter until the next miss measures it again.
* ``admit`` spends the modelled tokens: an urgent probe (the reference flow, a flow not yet
  shown to pass the hop, a proof) waits for a token; a routine one (a flow already shown to
  pass) goes only when tokens are to spare (or as the try), and is otherwise held back.
* A miss is known early: when the router answers a probe sent after one still unanswered.
* A proof probe waits like an urgent one, and is sent before anything else queued for
  its router, so it meets a refilled budget.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from reachtest.model import HopBudget

_S = 1_000_000_000
#: The usual Linux budget, assumed for a router found limited before there is data.
PRIOR_RATE_PER_S = 1.0
PRIOR_BURST = 6
MIN_RATE_PER_S = 0.2
MAX_RATE_PER_S = 1000.0
#: A miss counts as competing when the router answered a probe sent this close to it.
COMPETE_NS = 1 * _S
#: Competing misses within this window that make a router limited.
LIMIT_MISSES = 2
LIMIT_WINDOW_NS = 10 * _S
RATE_UP = 1.25
STEP_DOWN = 0.8
#: How far apart two misses must be to measure the rate between them, and at most.
MEASURE_MIN_NS = 3 * _S // 2
MEASURE_MAX_NS = 60 * _S
#: How often a routine probe may go without a token to find a higher rate.
TRY_NS = 10 * _S
#: A routine probe needs this many tokens in the model, so urgent ones keep theirs.
ROUTINE_RESERVE = 1.0

SEND, SKIP, TRY = 0, -1, -2
#: What a probe's ``had_token`` says: no model, a token in the model, sent as the try.
NO_MODEL, TOKEN, TRIED, LAZY = 0, 1, 2, 3


class Budget:
    """What the tracer knows of one responder's ICMP-error budget (mutable, engine-internal)."""

    __slots__ = (
        "address",
        "answered",
        "answered_at_miss",
        "answered_sent",
        "answers_before_limit",
        "burst",
        "first_miss_ns",
        "first_sent_ns",
        "held",
        "held_at_miss",
        "held_since_up",
        "last_ns",
        "limited",
        "measure_from_ns",
        "misses",
        "next_try_ns",
        "pending",
        "rate",
        "recent_misses",
        "sent",
        "tokens",
    )

    def __init__(self, address: str) -> None:
        self.address = address
        self.sent = 0
        self.answered = 0
        self.misses = 0
        self.held = 0
        self.held_since_up = 0
        self.limited = False
        self.rate = 0.0
        self.burst = 0.0
        self.tokens = 0.0
        self.last_ns = 0
        self.next_try_ns = 0
        self.first_sent_ns = -1
        self.first_miss_ns = -1
        self.answers_before_limit = 0
        self.measure_from_ns = -1
        self.answered_at_miss = 0
        self.held_at_miss = 0
        self.answered_sent: deque[int] = deque(maxlen=32)
        self.recent_misses: deque[int] = deque(maxlen=LIMIT_MISSES)
        #: Probes sent against this budget, oldest first (the tracer's SentProbe objects).
        self.pending: deque[Any] = deque(maxlen=256)

    # -- the model -----------------------------------------------------------------------

    def _refill(self, now_ns: int) -> None:
        if now_ns > self.last_ns:
            cap = max(self.burst, 1.0)
            self.tokens = min(cap, self.tokens + self.rate * (now_ns - self.last_ns) / _S)
            self.last_ns = now_ns

    def admit(self, now_ns: int, urgent: bool) -> int:
        """SEND, SKIP, or how many ns an urgent probe should wait before asking again."""
        if not self.limited:
            return SEND
        self._refill(now_ns)
        need = 1.0 if urgent else 1.0 + ROUTINE_RESERVE
        if self.tokens >= need:
            return SEND
        if not urgent:
            if self.held_since_up and now_ns >= self.next_try_ns:
                self.next_try_ns = now_ns + TRY_NS
                return TRY
            return SKIP
        return max(1, int((need - self.tokens) / self.rate * _S))

    def on_send(self, now_ns: int, tried: bool, reaches: bool) -> int:
        """Spend a token; what the probe had (NO_MODEL, TOKEN or TRIED). A probe not known
        to reach the router (``reaches`` false: beyond its flow's last answer) pays only
        if it is answered."""
        self.sent += 1
        if self.first_sent_ns < 0:
            self.first_sent_ns = now_ns
        if not self.limited:
            return NO_MODEL
        if not reaches:
            return LAZY
        self._refill(now_ns)
        self.tokens -= 1.0
        return TRIED if tried else TOKEN

    def on_hold(self) -> None:
        self.held += 1
        self.held_since_up += 1

    def on_answer(self, sent_ns: int, had_token: int) -> None:
        if self.first_sent_ns < 0:
            self.first_sent_ns = sent_ns
        self.answered += 1
        self.answered_sent.append(sent_ns)
        if had_token == LAZY:
            self.tokens -= 1.0
        if self.limited and had_token == TRIED:  # it had a token the model did not
            self.rate = min(MAX_RATE_PER_S, self.rate * RATE_UP)
            self.held_since_up = 0

    def on_miss(self, sent_ns: int, now_ns: int, had_token: int) -> None:
        """A probe of a flow known to get past this router went unanswered."""
        if not any(abs(s - sent_ns) <= COMPETE_NS for s in self.answered_sent):
            return  # the router answered nothing around it: loss, or a filter, not a budget
        self.misses += 1
        self._measure(sent_ns)
        if self.limited:
            self.tokens = min(self.tokens, 0.0)  # its bucket was empty
            self.last_ns = max(self.last_ns, now_ns)
            return
        self.recent_misses.append(sent_ns)
        if self.first_miss_ns < 0:
            self.first_miss_ns = sent_ns
            self.answers_before_limit = self.answered
        if (
            len(self.recent_misses) == LIMIT_MISSES
            and self.recent_misses[-1] - self.recent_misses[0] <= LIMIT_WINDOW_NS
        ):
            self._limit(now_ns)

    def _measure(self, sent_ns: int) -> None:
        """A miss at ``sent_ns``: the bucket was empty; measure the rate since the last
        such moment far enough back."""
        if self.measure_from_ns < 0 or sent_ns - self.measure_from_ns > MEASURE_MAX_NS:
            self.measure_from_ns, self.answered_at_miss = sent_ns, self.answered
            self.held_at_miss = self.held
            return
        span_ns = sent_ns - self.measure_from_ns
        # Only a span in which probes were held back (we asked for more than it gave)
        # measures the router, not our own pace; a lower figure is taken in steps.
        if span_ns >= MEASURE_MIN_NS and self.limited and self.held > self.held_at_miss:
            measured = (self.answered - self.answered_at_miss) * _S / span_ns
            rate = measured if measured >= self.rate else max(measured, self.rate * STEP_DOWN)
            self.rate = min(MAX_RATE_PER_S, max(MIN_RATE_PER_S, rate))

    def _limit(self, now_ns: int) -> None:
        self.limited = True
        self.rate = PRIOR_RATE_PER_S
        self.burst = float(PRIOR_BURST)
        self.tokens = 0.0
        self.last_ns = now_ns
        self.next_try_ns = now_ns + TRY_NS

    def record(self, now_ns: int) -> HopBudget:
        """What was learned, for the run result."""
        rate: float | None = None
        burst: int | None = None
        if self.limited:
            # Answers per second since the first miss (the router's pace once its burst was
            # spent), when there are two seconds of it; else the model's rate.
            rate = self.rate
            span_s = (now_ns - self.first_miss_ns) / _S
            after = self.answered - self.answers_before_limit
            if span_s >= 2.0 and after > 0:
                rate = after / span_s
            before_s = max(0.0, (self.first_miss_ns - self.first_sent_ns) / _S)
            burst = max(1, round(self.answers_before_limit - rate * before_s))
        return HopBudget(
            address=self.address,
            limited=self.limited,
            rate_per_s=None if rate is None else round(rate, 3),
            burst=burst,
            answered=self.answered,
            missed=self.misses,
            held=self.held,
        )
