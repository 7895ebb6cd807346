"""One shard of the simulation: a block of patients, their claims, lines and prescriptions.

Claims, lines and prescriptions are kept in internal frames with integer entity indices
(see ``CLAIM_SCHEMA`` …) while typologies edit them; :mod:`data_synth.finalize` turns them
into contract tables.  Claim numbers are global: ``shard_index * CLAIM_BLOCK + local``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from data_synth.config import SynthConfig, month_weights
from data_synth.world import World

CLAIM_BLOCK = 100_000_000
PHANTOM_BLOCK = 1_000_000      # new (unregistered) patient indices per shard
NO_DEATH = 1_000_000           # death_day of a patient who does not die

CLAIM_SCHEMA = {
    "claim_no": pl.Int64, "pat": pl.Int64, "doc": pl.Int32, "fac": pl.Int32, "ph": pl.Int32,
    "setting": pl.String, "day": pl.Int32, "admit": pl.Int32, "discharge": pl.Int32,
    "diag": pl.Int32, "drg": pl.Int32, "settle_sec": pl.Int32,
}
LINE_SCHEMA = {"claim_no": pl.Int64, "item": pl.Int32, "quantity": pl.Float64,
               "days_supply": pl.Int32, "unit_price": pl.Float64}
RX_SCHEMA = {"claim_no": pl.Int64, "channel": pl.String, "issued_sec": pl.Int32,
             "fill_delay_sec": pl.Int32}

# Stream ids of the per-shard generators: default_rng([seed, shard_index, stream]).
STREAM_PATIENTS, STREAM_NORMAL, STREAM_AUDIT = 1, 2, 3
STREAM_TYPOLOGY_BASE = 100


@dataclass
class Shard:
    """Mutable state of one shard while it is simulated.

    Patient arrays are indexed by local position ``i``; the global patient index is
    ``pat_index[i]``.  Days are offsets from the start date.
    """

    index: int
    world: World
    config: SynthConfig
    pat_index: np.ndarray            # (n,) int64 global patient index
    sex: np.ndarray                  # (n,) 0 = M, 1 = F
    birth_day: np.ndarray            # (n,) day offset of birth (negative)
    death_day: np.ndarray            # (n,) day offset of death, NO_DEATH if alive
    region: np.ndarray               # (n,)
    employee: np.ndarray             # (n,) bool insurance type
    chronic: np.ndarray              # (n,) bool
    home_fac: np.ndarray             # (n,)
    home_ph: np.ndarray              # (n,)
    activity: np.ndarray             # (n,) mean-1 propensity to seek care
    claims: pl.DataFrame = None
    lines: pl.DataFrame = None
    rx: pl.DataFrame = None
    labels: list[pl.DataFrame] = field(default_factory=list)         # claim_no, typology, ring_id
    entity_labels: list[pl.DataFrame] = field(default_factory=list)  # entity_type, entity_id, …
    extra_purchases: list[pl.DataFrame] = field(default_factory=list)  # ph, item, day, quantity
    taken: np.ndarray = None         # (n,) bool, patient already used by a patient-level typology
    next_local: int = 0
    n_normal: int = 0                # honest claims generated before injection

    # ------------------------------------------------------------ random streams
    def rng(self, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, self.index, stream])

    # ------------------------------------------------------------ patients
    @property
    def n_patients(self) -> int:
        return len(self.pat_index)

    def local_of(self, pat: np.ndarray) -> np.ndarray:
        """Local positions of global patient indices (all must belong to this shard)."""
        order = np.argsort(self.pat_index, kind="stable")
        pos = np.searchsorted(self.pat_index[order], pat)
        return order[pos]

    def age_at(self, local: np.ndarray, day: np.ndarray) -> np.ndarray:
        """Age in whole years of local patients on day offsets."""
        return np.floor((day - self.birth_day[local]) / 365.25).astype(np.int32)

    def add_patients(self, **arrays: np.ndarray) -> np.ndarray:
        """Append patients (e.g. unregistered phantoms); return their local positions."""
        n_new = len(arrays["pat_index"])
        start = self.n_patients
        for name, values in arrays.items():
            setattr(self, name, np.concatenate([getattr(self, name), values]))
        self.taken = np.concatenate([self.taken, np.ones(n_new, bool)])
        return np.arange(start, start + n_new)

    # ------------------------------------------------------------ claims
    def new_claim_nos(self, n: int) -> np.ndarray:
        nos = self.index * CLAIM_BLOCK + self.next_local + np.arange(n, dtype=np.int64)
        self.next_local += n
        if self.next_local >= CLAIM_BLOCK:
            raise ValueError(f"shard {self.index} has more than {CLAIM_BLOCK} claims; lower shard_claims")
        return nos

    def append(self, claims: pl.DataFrame, lines: pl.DataFrame | None = None,
               rx: pl.DataFrame | None = None) -> None:
        self.claims = pl.concat([self.claims, claims.select(list(CLAIM_SCHEMA)).cast(CLAIM_SCHEMA)])
        if lines is not None and lines.height:
            self.lines = pl.concat([self.lines, lines.select(list(LINE_SCHEMA)).cast(LINE_SCHEMA)])
        if rx is not None and rx.height:
            self.rx = pl.concat([self.rx, rx.select(list(RX_SCHEMA)).cast(RX_SCHEMA)])

    def label(self, claim_nos: np.ndarray, typology: str, ring_id: np.ndarray | str | None = None) -> None:
        ring = (pl.Series("ring_id", ring_id, dtype=pl.String) if isinstance(ring_id, np.ndarray)
                else pl.repeat(ring_id, len(claim_nos), dtype=pl.String, eager=True).alias("ring_id"))
        self.labels.append(pl.DataFrame({"claim_no": np.asarray(claim_nos, np.int64),
                                         "typology": typology}).with_columns(ring))

    def label_entities(self, entity_type: str, ids: pl.Series | np.ndarray, typology: str,
                       ring_id: np.ndarray | str | None = None) -> None:
        ids = pl.Series("entity_id", ids, dtype=pl.String)
        ring = (pl.Series("ring_id", ring_id, dtype=pl.String) if isinstance(ring_id, np.ndarray)
                else pl.repeat(ring_id, len(ids), dtype=pl.String, eager=True).alias("ring_id"))
        self.entity_labels.append(pl.DataFrame({"entity_type": entity_type, "entity_id": ids,
                                                "typology": typology}).with_columns(ring))

    def fraud_claim_nos(self) -> np.ndarray:
        if not self.labels:
            return np.empty(0, np.int64)
        return np.unique(np.concatenate([f["claim_no"].to_numpy() for f in self.labels]))

    def _labelled_local(self) -> np.ndarray:
        """(next_local,) bool over local claim numbers: True where a typology labelled the claim.

        A dense table indexed by ``claim_no - index × CLAIM_BLOCK`` replaces ``np.isin``
        (a sort of the million claim numbers per call).
        """
        flags = np.zeros(self.next_local, bool)
        base = self.index * CLAIM_BLOCK
        for frame in self.labels:
            flags[frame["claim_no"].to_numpy() - base] = True
        return flags

    def honest_mask(self) -> np.ndarray:
        """(claims,) True for claims no typology has labelled yet."""
        return ~self._labelled_local()[self.claims["claim_no"].to_numpy() - self.index * CLAIM_BLOCK]

    def first_lines(self, item_ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row index (into ``lines``) of the first line per honest claim whose item passes ``item_ok``.

        ``item_ok`` is a bool array over the item catalogue.  Returns (rows, claim_nos), both
        sorted by claim number.
        """
        base = self.index * CLAIM_BLOCK
        local = self.lines["claim_no"].to_numpy() - base
        present = np.zeros(self.next_local, bool)          # claims removed by a typology have no row
        present[self.claims["claim_no"].to_numpy() - base] = True
        ok = item_ok[self.lines["item"].to_numpy()] & present[local] & ~self._labelled_local()[local]
        rows = np.flatnonzero(ok)
        # Stable sort by claim keeps the first line of each claim first in its run.
        order = np.argsort(local[rows], kind="stable")
        rows, sorted_local = rows[order], local[rows][order]
        first = np.r_[True, sorted_local[1:] != sorted_local[:-1]] if len(rows) else np.zeros(0, bool)
        return rows[first], sorted_local[first] + base

    def claim_columns(self, claim_nos: np.ndarray, columns: list[str]) -> pl.DataFrame:
        """Rows of ``claims`` for the given claim numbers, in that order (all must exist)."""
        base = self.index * CLAIM_BLOCK
        position = np.full(self.next_local, -1, np.int64)
        position[self.claims["claim_no"].to_numpy() - base] = np.arange(self.claims.height)
        rows = position[np.asarray(claim_nos, np.int64) - base]
        if (rows < 0).any():
            raise KeyError(f"shard {self.index}: claim_columns got claim numbers that are not in claims, "
                           f"e.g. {int(np.asarray(claim_nos)[rows < 0][0])}")
        return self.claims.select(["claim_no", *columns])[rows]

    def set_line_values(self, rows: np.ndarray, **columns: np.ndarray) -> None:
        """Overwrite line cells at ``rows`` (positions in ``lines``) column by column."""
        updates = []
        for name, values in columns.items():
            series = self.lines[name].clone()
            series.scatter(rows, pl.Series(values).cast(LINE_SCHEMA[name]))
            updates.append(series)
        self.lines = self.lines.with_columns(updates)

    def target_count(self, prevalence: float) -> int:
        """Fraudulent claims a typology should label in this shard."""
        return int(round(prevalence * self.n_normal))

    def month_weight_of_days(self, days: np.ndarray, drift: float) -> np.ndarray:
        weights = np.asarray(month_weights(self.config.months, drift))
        return weights[self.world.month_of_day[np.clip(days, 0, self.world.n_days - 1)]]

    def fraud_days(self, rng: np.random.Generator, n: int, drift: float) -> np.ndarray:
        """Sample ``n`` days following the seasonal pattern tilted by ``drift``."""
        w = self.world.day_weight * self.month_weight_of_days(np.arange(self.world.n_days), drift)
        return rng.choice(self.world.n_days, size=n, p=w / w.sum()).astype(np.int32)

    def choose(self, rng: np.random.Generator, candidates: np.ndarray, n: int,
               weights: np.ndarray | None = None) -> np.ndarray:
        """Up to ``n`` distinct elements of ``candidates`` (optionally weighted)."""
        n = min(n, len(candidates))
        if n <= 0:
            return candidates[:0]
        p = None if weights is None else weights / weights.sum()
        return rng.choice(candidates, size=n, replace=False, p=p)

    def on_duty_day(self, doc: np.ndarray, day: np.ndarray) -> np.ndarray:
        """The doctor's first duty day >= day, else the last one before; -1 if none."""
        w = self.world
        day = np.clip(day, 0, w.n_days - 1)
        nxt = w.next_duty[doc, day].astype(np.int32)
        prv = w.prev_duty[doc, day].astype(np.int32)
        return np.where(nxt < w.n_days, nxt, prv)


# ---------------------------------------------------------------- picking helpers

def pick_in_group(rng: np.random.Generator, group: np.ndarray, starts: np.ndarray,
                  counts: np.ndarray, members: np.ndarray | None = None) -> np.ndarray:
    """Uniform member of each row's group; groups are contiguous slices ``starts:starts+counts``."""
    pos = starts[group] + np.floor(rng.random(len(group)) * counts[group]).astype(np.int64)
    return pos if members is None else members[pos]


def pick_weighted_in_group(rng: np.random.Generator, group: np.ndarray, starts: np.ndarray,
                           counts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Member index (into ``weights``) of each row's group drawn proportionally to weight."""
    cum = np.cumsum(weights)
    lo = np.where(starts[group] > 0, cum[np.maximum(starts[group] - 1, 0)], 0.0)
    hi = cum[starts[group] + counts[group] - 1]
    u = lo + rng.random(len(group)) * (hi - lo)
    idx = np.searchsorted(cum, u, side="right")
    return np.clip(idx, starts[group], starts[group] + counts[group] - 1)


def other_region(rng: np.random.Generator, region: np.ndarray, n_regions: int) -> np.ndarray:
    return (region + 1 + rng.integers(0, n_regions - 1, len(region))) % n_regions


# ---------------------------------------------------------------- line builders

def drug_lines(shard: Shard, rng: np.random.Generator, claim_nos: np.ndarray, local_pat: np.ndarray,
               day: np.ndarray, fac_level: np.ndarray, n_lines: np.ndarray,
               pool: np.ndarray, days_choices=(1, 2, 3, 3, 5, 7, 7)) -> pl.DataFrame:
    """Honest drug lines: ``n_lines[i]`` distinct drugs for claim ``i`` from ``pool``.

    Drugs the patient may not receive (sex, age, facility level) are replaced by an
    unrestricted drug; quantity = daily units (≤ max_daily_units) × days_supply.
    """
    w = shard.world
    rep = np.repeat(np.arange(len(claim_nos)), n_lines)
    drug = pool[rng.integers(0, len(pool), len(rep))]
    sex = shard.sex[local_pat[rep]]
    age = shard.age_at(local_pat[rep], day[rep])
    bad = (((w.drug_sex == 1)[drug] & (sex == 1)) | ((w.drug_sex == 2)[drug] & (sex == 0))
           | ((w.drug_min_age[drug] >= 0) & (age < w.drug_min_age[drug]))
           | ((w.drug_max_age[drug] >= 0) & (age > w.drug_max_age[drug]))
           | (w.drug_level[drug] > fac_level[rep]))
    drug = np.where(bad, w.safe_drugs[rng.integers(0, len(w.safe_drugs), len(rep))], drug)
    days = np.asarray(days_choices)[rng.integers(0, len(days_choices), len(rep))]
    daily = np.maximum(0.5, np.floor(w.drug_max_daily[drug] * rng.choice([0.25, 0.5, 0.75, 1.0], len(rep))
                                     * 2) / 2)
    keep = first_of_pair(rep, drug)
    return _lines(claim_nos[rep][keep], drug[keep], (daily * days)[keep], days[keep], w.item_price[drug[keep]])


def service_lines(shard: Shard, rng: np.random.Generator, claim_nos: np.ndarray, n_lines: np.ndarray,
                  items: np.ndarray, distinct: bool = True) -> pl.DataFrame:
    """Exam / treatment / material lines of quantity 1 drawn from ``items``.

    With ``distinct`` a claim's items are ``base + j × stride`` (mod the pool size) with a
    stride coprime to the pool size, so they never repeat within a claim.
    """
    rep_idx = np.repeat(np.arange(len(claim_nos)), n_lines)
    if distinct:
        m = len(items)
        strides = np.flatnonzero(np.gcd(np.arange(m), m) == 1) if m > 1 else np.array([0])
        base = rng.integers(0, m, len(claim_nos))
        stride = strides[rng.integers(0, len(strides), len(claim_nos))]
        j = np.arange(len(rep_idx)) - np.repeat(np.cumsum(n_lines) - n_lines, n_lines)
        keep = j < m
        rep_idx, j = rep_idx[keep], j[keep]
        item = items[(base[rep_idx] + j * stride[rep_idx]) % m]
    else:
        item = items[rng.integers(0, len(items), len(rep_idx))]
    return _lines(claim_nos[rep_idx], item, np.ones(len(rep_idx)), None, shard.world.item_price[item])


def _lines(claim_nos, item, quantity, days_supply, unit_price) -> pl.DataFrame:
    frame = pl.DataFrame({"claim_no": np.asarray(claim_nos, np.int64), "item": np.asarray(item, np.int32),
                          "quantity": np.asarray(quantity, np.float64)})
    days = (pl.lit(None, pl.Int32) if days_supply is None
            else pl.Series(np.asarray(days_supply, np.int32)))
    return frame.with_columns(days.alias("days_supply"), pl.Series("unit_price", unit_price, pl.Float64))


def first_of_pair(claim_index: np.ndarray, item: np.ndarray) -> np.ndarray:
    """Bool mask keeping the first row of every (claim, item) pair, in row order."""
    if len(item) == 0:
        return np.ones(0, bool)
    # One composite key and a stable sort (ties keep row order) instead of a 3-key lexsort.
    key = claim_index.astype(np.int64) * (int(item.max()) + 1) + item
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    dup_sorted = np.zeros(len(order), bool)
    dup_sorted[1:] = sorted_key[1:] == sorted_key[:-1]
    keep = np.ones(len(order), bool)
    keep[order[dup_sorted]] = False
    return keep


def consult_lines(shard: Shard, claim_nos: np.ndarray) -> pl.DataFrame:
    return service_lines(shard, np.random.default_rng(0), claim_nos, np.ones(len(claim_nos), np.int64),
                         np.array([shard.world.consult_item]))


def inpatient_lines(shard: Shard, rng: np.random.Generator, claim_nos: np.ndarray, local_pat: np.ndarray,
                    admit: np.ndarray, los: np.ndarray, fac: np.ndarray,
                    treatment_share: float = 0.85) -> pl.DataFrame:
    """Lines of inpatient stays: one bed line per day, treatments on most days, exams, drugs."""
    w = shard.world
    level = w.fac_level[fac]
    bed_item = np.repeat(w.bed_item_by_level[level], los)
    beds = _lines(np.repeat(claim_nos, los), bed_item, np.ones(len(bed_item)), None, w.item_price[bed_item])
    n_treat = np.maximum(1, rng.binomial(los, treatment_share)) if treatment_share > 0 else \
        np.zeros(len(los), np.int64)
    treat = service_lines(shard, rng, claim_nos, n_treat, w.treatment_items, distinct=False)
    exams = service_lines(shard, rng, claim_nos, 1 + rng.poisson(1.5, len(claim_nos)), w.exam_items)
    mats = service_lines(shard, rng, claim_nos, rng.poisson(0.6, len(claim_nos)), w.material_items)
    drugs = drug_lines(shard, rng, claim_nos, local_pat, admit, level, 1 + rng.poisson(1.5, len(claim_nos)),
                       w.acute_drugs, days_choices=(3, 5, 7))
    # Not sorted by claim here: finalize sorts all lines stably by claim once.
    return pl.concat([beds, treat, exams, mats, drugs])


def claims_frame(claim_nos: np.ndarray, pat: np.ndarray, doc: np.ndarray, fac: np.ndarray, ph,
                 setting: str | np.ndarray, day: np.ndarray, diag: np.ndarray, settle_sec: np.ndarray,
                 admit=None, discharge=None, drg=None) -> pl.DataFrame:
    """Internal claims frame (``CLAIM_SCHEMA``); -1 marks an absent pharmacy/admit/drg."""
    n = len(claim_nos)

    def full(v):
        return np.full(n, -1) if v is None else (np.full(n, v) if np.isscalar(v) else v)

    frame = pl.DataFrame({
        "claim_no": claim_nos, "pat": pat, "doc": doc, "fac": fac, "ph": full(ph),
        "day": day, "admit": full(admit), "discharge": full(discharge), "diag": diag,
        "drg": full(drg), "settle_sec": settle_sec,
    })
    setting = pl.lit(setting) if isinstance(setting, str) else pl.Series(setting)
    return frame.with_columns(setting.alias("setting")).select(list(CLAIM_SCHEMA)).cast(CLAIM_SCHEMA)


def rx_frame(claim_nos: np.ndarray, channel: str, rng: np.random.Generator) -> pl.DataFrame:
    n = len(claim_nos)
    return pl.DataFrame({"claim_no": claim_nos,
                         "issued_sec": rng.integers(8 * 3600, 17 * 3600, n),
                         "fill_delay_sec": rng.integers(600, 5 * 3600, n)}).with_columns(
        pl.lit(channel).alias("channel")).select(list(RX_SCHEMA)).cast(RX_SCHEMA)


def settle_seconds(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(18 * 3600, 23 * 3600, n).astype(np.int32)
