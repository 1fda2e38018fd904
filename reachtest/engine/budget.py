"""Each responder's ICMP-error budget: learned online from answers and misses, spent by priority.

Routers answer only so many ICMP errors per second to one source (Linux: one token per
``icmp_ratelimit`` ms, a burst of 6; IPv6 scales it with the route's prefix). Every flow
and target whose probes expire at one router shares that router's one budget, so the
tracer asks this module before each probe that expires at a known router:

* A router is presumed unlimited until it shows *competing misses*: probes of flows known
  to get past it went unanswered while it answered other probes sent within a second of
  them. Three such misses, significantly more than the end-to-end loss explains
  (binomial, p < 0.01), and a token bucket (below) that explains at least three quarters
  of them, and it is ``limited``: loss on the way also takes end-to-end probes, and
  misses at random, not when a bucket runs dry.
* A limited router gets a token bucket fitted to what it did: every probe known to reach
  it, answered or not, replayed through candidate buckets (rate x burst, on a log grid);
  the bucket that explains the most of them wins (ties: the rate nearest Linux's one per
  second, then the smaller burst: data that does not pin the rate down keeps the usual
  one). The fit is
  redone when a miss or an answered try brings new evidence (at most every
  ``REFIT_NS``), and the model's tokens are the fitted bucket's, refilled since.
* While probes are being held back, a routine probe now and then goes without a token in
  the model (the *try*), right after the model's bucket was spent, so that it takes no
  token an urgent probe needs: if the router answers it and the refit finds a higher rate, the
  next try comes a second later; else the tries space out (doubling, up to
  ``TRY_MAX_NS``). Without tries, pacing below the true rate would never show it.
* ``admit`` spends the modelled tokens: an urgent probe (the reference flow, a flow not yet
  shown to pass the hop, a proof) waits for a token; a routine one (a flow already shown to
  pass) goes only when tokens are to spare (or as the try), and is otherwise held back.
* A miss is known early: when the router answers a probe sent after one still unanswered,
  or when another probe is about to go to it and one is unanswered for four times its
  slowest answer.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from reachtest.model import HopBudget

_S = 1_000_000_000
#: The usual Linux budget, assumed for a router found limited before a fit.
PRIOR_RATE_PER_S = 1.0
PRIOR_BURST = 6
#: The candidate buckets: rates 0.25/s .. 64/s in steps of 2^(1/4), and bursts.
RATES_PER_S = tuple(0.25 * 2 ** (i / 4) for i in range(33))
BURSTS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 30, 50)
#: Probes (answered or missed) kept per router for the fit.
HISTORY = 160
REFIT_NS = 2 * _S
#: A probe unanswered this long (at least; see late_ns) is a miss before its timeout.
LATE_MIN_NS = 20_000_000
#: A miss counts as competing when the router answered a probe sent this close to it.
COMPETE_NS = 1 * _S
#: A router's misses must be more than end-to-end loss explains, at this p-value (a
#: lossy link loses probes at every hop beyond it and at the target alike).
SIGNIFICANT = 0.01
#: Competing misses within this window that make a router limited.
LIMIT_MISSES = 3
LIMIT_WINDOW_NS = 10 * _S
#: How often a routine probe may go without a token to find a higher rate: at first, and
#: at the most.
TRY_MIN_NS = 1 * _S
TRY_MAX_NS = 10 * _S
TRY_BELOW = 0.25
#: A routine probe needs this many tokens in the model, so urgent ones keep theirs.
ROUTINE_RESERVE = 1.0

SEND, SKIP, TRY = 0, -1, -2
#: What a probe's ``had_token`` says: no model, a token in the model, sent as the try, or
#: not known to reach the router (it pays only if answered).
NO_MODEL, TOKEN, TRIED, LAZY = 0, 1, 2, 3


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    if k <= 0:
        return 1.0
    if p <= 0.0:
        return 0.0
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


def _replay(events: list[tuple[int, bool]], rate: float, burst: int) -> tuple[int, float]:
    """Run ``events`` ((sent ns, answered), in time order) through a bucket of ``rate``
    tokens a second up to ``burst``, full at the first: (how many events it does not
    explain, its tokens after the last). Where the router contradicts the bucket, the
    router is believed: its bucket was empty then."""
    per_ns = rate / _S
    tokens, last, wrong = float(burst), events[0][0], 0
    for sent, answered in events:
        tokens = min(burst, tokens + per_ns * (sent - last))
        last = sent
        if answered and tokens >= 1.0:
            tokens -= 1.0
        elif answered or tokens >= 1.0:
            wrong += 1  # answered with no token, or refused with one
            tokens = 0.0
    return wrong, tokens


def fit(events: list[tuple[int, bool]]) -> tuple[float, int, float, int, int]:
    """The token bucket that explains most of ``events`` ((sent ns, answered), in time
    order): (rate per s, burst, its tokens after the last event, that event's ns, how
    many events it does not explain). Ties go to the rate nearest Linux's, then the
    smaller burst."""
    best: tuple[tuple[int, float, int], float, int, float] | None = None
    for burst in BURSTS:
        for rate in RATES_PER_S:
            wrong, tokens = _replay(events, rate, burst)
            key = (wrong, abs(math.log(rate / PRIOR_RATE_PER_S)), burst)
            if best is None or key < best[0]:
                best = (key, rate, burst, tokens)
    assert best is not None
    (wrong, _, _), rate, burst, tokens = best
    return rate, burst, tokens, events[-1][0], wrong


class Budget:
    """What the tracer knows of one responder's ICMP-error budget (mutable, engine-internal)."""

    __slots__ = (
        "address",
        "answered",
        "answered_sent",
        "burst",
        "events",
        "fitted_ns",
        "held",
        "held_since_try",
        "last_ns",
        "limited",
        "misses",
        "next_try_ns",
        "pending",
        "rate",
        "recent_misses",
        "slowest_ns",
        "stale",
        "tokens",
        "tried_ok",
        "try_gap_ns",
    )

    def __init__(self, address: str) -> None:
        self.address = address
        self.answered = 0
        self.misses = 0
        self.held = 0
        self.held_since_try = 0
        self.limited = False
        self.rate = 0.0
        self.burst = 0
        self.tokens = 0.0
        self.last_ns = 0
        self.next_try_ns = 0
        self.try_gap_ns = TRY_MIN_NS
        self.tried_ok = False
        self.fitted_ns = 0
        self.stale = False
        self.slowest_ns = 0
        self.answered_sent: deque[int] = deque(maxlen=32)
        self.recent_misses: deque[int] = deque(maxlen=LIMIT_MISSES)
        #: (sent ns, answered) of probes known to reach the router, for the fit.
        self.events: deque[tuple[int, bool]] = deque(maxlen=HISTORY)
        #: Probes sent against this budget, oldest first (the tracer's SentProbe objects).
        self.pending: deque[Any] = deque(maxlen=256)

    # -- the model -----------------------------------------------------------------------

    def _refill(self, now_ns: int) -> None:
        if now_ns > self.last_ns:
            self.tokens = min(
                float(self.burst), self.tokens + self.rate * (now_ns - self.last_ns) / _S
            )
            self.last_ns = now_ns

    def _refit(self, now_ns: int) -> None:
        if not self.limited or not self.stale or now_ns - self.fitted_ns < REFIT_NS:
            return
        self.stale = False
        self.fitted_ns = now_ns
        rate, burst, tokens, last, _ = fit(sorted(self.events))
        if self.tried_ok:  # a try was answered: keep trying soon only if it raised the rate
            self.tried_ok = False
            up = rate > self.rate
            self.try_gap_ns = TRY_MIN_NS if up else min(TRY_MAX_NS, 2 * self.try_gap_ns)
        self.rate, self.burst, self.tokens, self.last_ns = rate, burst, tokens, last
        self._refill(now_ns)

    def admit(self, now_ns: int, urgent: bool) -> int:
        """SEND, SKIP, TRY, or how many ns an urgent probe should wait before asking again."""
        if not self.limited:
            return SEND
        self._refit(now_ns)
        self._refill(now_ns)
        need = 1.0 if urgent else 1.0 + ROUTINE_RESERVE
        if self.tokens >= need:
            return SEND
        if not urgent:
            # Try only when the model's bucket was just spent: an answer then is proof of
            # a larger budget, and a refusal takes no token an urgent probe would need.
            if self.tokens < TRY_BELOW and self.held_since_try and now_ns >= self.next_try_ns:
                self.next_try_ns = now_ns + self.try_gap_ns
                self.held_since_try = 0
                return TRY
            return SKIP
        return max(1, int((need - self.tokens) / self.rate * _S) + 1)

    def on_send(self, now_ns: int, tried: bool, reaches: bool) -> int:
        """Spend a token; what the probe had (NO_MODEL, TOKEN, TRIED or LAZY). A probe not
        known to reach the router (beyond its flow's last answer) pays only if answered."""
        if not self.limited:
            return NO_MODEL
        if not reaches:
            return LAZY
        self._refill(now_ns)
        self.tokens -= 1.0
        return TRIED if tried else TOKEN

    def on_hold(self) -> None:
        self.held += 1
        self.held_since_try += 1

    def late_ns(self) -> int:
        """How long after its sending a probe to this router counts as missed, before its
        timeout: four times the slowest answer it gave, and at least ``LATE_MIN_NS``."""
        return max(LATE_MIN_NS, 4 * self.slowest_ns)

    def on_answer(self, sent_ns: int, had_token: int, rtt_ns: int) -> None:
        self.slowest_ns = max(self.slowest_ns, rtt_ns)
        self.answered += 1
        self.answered_sent.append(sent_ns)
        self.events.append((sent_ns, True))
        if had_token == LAZY:
            self.tokens -= 1.0
        elif had_token == TRIED:  # it had a token the model did not: refit
            self.tried_ok = True
            self.stale = True

    def on_miss(self, sent_ns: int, now_ns: int, had_token: int, path_loss: float = 0.0) -> None:
        """A probe of a flow known to get past this router went unanswered; ``path_loss``
        is the share of end-to-end probes lost so far (loss on the way, not budgets)."""
        if not any(abs(s - sent_ns) <= COMPETE_NS for s in self.answered_sent):
            return  # the router answered nothing around it: loss, or a filter, not a budget
        self.misses += 1
        self.events.append((sent_ns, False))
        self.stale = True
        if self.limited:
            if had_token == TRIED:
                self.try_gap_ns = min(TRY_MAX_NS, 2 * self.try_gap_ns)
            self.tokens = min(self.tokens, 0.0)  # its bucket was empty
            self.last_ns = max(self.last_ns, now_ns)
            return
        self.recent_misses.append(sent_ns)
        if (
            len(self.recent_misses) == LIMIT_MISSES
            and self.recent_misses[-1] - self.recent_misses[0] <= LIMIT_WINDOW_NS
            and self._beyond_path_loss(path_loss)
            and self._bucket_explains()
        ):
            self.limited = True
            self.rate, self.burst = PRIOR_RATE_PER_S, PRIOR_BURST
            self.tokens, self.last_ns = 0.0, now_ns
            self.next_try_ns = now_ns + TRY_MIN_NS
            self._refit(now_ns)

    def _beyond_path_loss(self, path_loss: float) -> bool:
        """More misses among the recent probes than the end-to-end loss explains? (Over
        the kept history only: bounded work, and recent.)"""
        misses = sum(1 for _, answered in self.events if not answered)
        return binomial_tail(misses, len(self.events), path_loss) < SIGNIFICANT

    def _bucket_explains(self) -> bool:
        """Do the misses come when a bucket runs dry (a rate limit), or at random (loss on
        the way, which a bucket cannot explain)? A bucket must explain most of them."""
        misses = sum(1 for _, answered in self.events if not answered)
        _, _, _, _, wrong = fit(sorted(self.events))
        return wrong * 4 <= misses

    def settle(self) -> None:
        """Fit the last evidence in (at the end of a run)."""
        if self.limited and self.stale:
            self.fitted_ns = -REFIT_NS
            self._refit(self.last_ns)

    def record(self) -> HopBudget:
        """What was learned, for the run result (reads only: the live view calls it)."""
        return HopBudget(
            address=self.address,
            limited=self.limited,
            rate_per_s=round(self.rate, 3) if self.limited else None,
            burst=self.burst if self.limited else None,
            answered=self.answered,
            missed=self.misses,
            held=self.held,
        )
