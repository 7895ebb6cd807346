"""Turn a simulated shard into contract tables: ids, dates, amounts, purchases, audits."""

from __future__ import annotations

import numpy as np
import polars as pl

from data_synth.shard import CLAIM_BLOCK, STREAM_AUDIT, Shard
from data_synth.world import World

# Share of the reimbursable amount the fund pays, by (employee?, setting).
_FUND_RATIO = {
    (True, "outpatient"): 0.70, (True, "inpatient"): 0.85, (True, "pharmacy"): 0.60,
    (True, "online"): 0.60, (False, "outpatient"): 0.50, (False, "inpatient"): 0.70,
    (False, "pharmacy"): 0.50, (False, "online"): 0.50,
}
CROSS_REGION_PENALTY = 0.10
_SETTING_CODE = {"outpatient": 0, "inpatient": 1, "pharmacy": 2, "online": 3}
_RATIO_TABLE = np.array([[_FUND_RATIO[(bool(e), s)] for s in _SETTING_CODE] for e in (0, 1)])


def patient_ids(index: pl.Expr) -> pl.Expr:
    return pl.concat_str([pl.lit("P"), (index + 1).cast(pl.String).str.zfill(10)])


def claim_ids(claim_no: pl.Expr) -> pl.Expr:
    return pl.concat_str([pl.lit("C"), claim_no.cast(pl.String).str.zfill(12)])


def _days_to_date(world: World, days: pl.Expr) -> pl.Expr:
    return (days + world.start_epoch).cast(pl.Int32).cast(pl.Date)


def _timestamp(world: World, days: pl.Expr, seconds: pl.Expr) -> pl.Expr:
    micros = ((days.cast(pl.Int64) + world.start_epoch) * 86_400 + seconds.cast(pl.Int64)) * 1_000_000
    return micros.cast(pl.Datetime("us"))


def _gather(values: np.ndarray | pl.Series, index: pl.Series) -> pl.Series:
    series = values if isinstance(values, pl.Series) else pl.Series(values)
    return series.gather(index)


def patients_table(shard: Shard) -> pl.DataFrame:
    w = shard.world
    death = np.where(shard.death_day < w.n_days, shard.death_day, np.iinfo(np.int32).min)
    # Strings are made by polars from integer codes (numpy unicode arrays convert slowly).
    frame = pl.DataFrame({"pat": shard.pat_index, "birth": shard.birth_day, "death": death,
                          "female": shard.sex == 1, "region_index": shard.region,
                          "employee": shard.employee, "chronic": shard.chronic})
    return frame.select(
        patient_ids(pl.col("pat")).alias("patient_id"),
        pl.when(pl.col("female")).then(pl.lit("F")).otherwise(pl.lit("M")).alias("sex"),
        _days_to_date(w, pl.col("birth")).alias("birth_date"),
        pl.when(pl.col("death") > np.iinfo(np.int32).min)
        .then(_days_to_date(w, pl.col("death"))).otherwise(None).alias("death_date"),
        _gather(w.region_codes, frame["region_index"]).alias("region"),
        pl.when(pl.col("employee")).then(pl.lit("employee")).otherwise(pl.lit("resident")).alias("insurance_type"),
        "chronic",
    ).sort("patient_id")


def shard_tables(shard: Shard) -> dict[str, pl.DataFrame]:
    """Contract tables (except world tables) for one simulated shard."""
    w = shard.world
    lines = shard.lines.sort("claim_no", maintain_order=True)
    claim_no = lines["claim_no"].to_numpy()
    starts = np.flatnonzero(np.r_[True, claim_no[1:] != claim_no[:-1]])
    line_no = np.arange(len(claim_no)) - np.repeat(starts, np.diff(np.r_[starts, len(claim_no)])) + 1
    item_np = lines["item"].to_numpy()
    amount = lines.select((pl.col("quantity") * pl.col("unit_price")).round(2))["quantity"].to_numpy()
    item = lines["item"]
    lines = lines.with_columns(
        pl.Series("amount", amount), pl.Series("line_no", line_no, dtype=pl.Int32),
        _gather(w.item_codes, item).alias("item_code"),
        _gather(w.item_types, item).alias("item_type"),
    )
    # Lines are grouped by claim: per-claim sums are segment sums over `starts`.
    claims = shard.claims.sort("claim_no")
    claims_no = claims["claim_no"].to_numpy()
    # Dense look-up: local claim number -> row of the sorted claims (claim numbers of a
    # shard are base + 0 … next_local - 1), cheaper than binary searches per line.
    base = shard.index * CLAIM_BLOCK
    claim_row = np.full(shard.next_local, -1, np.int64)
    claim_row[claims_no - base] = np.arange(len(claims_no))
    line_claim = claim_row[claim_no - base]
    if (line_claim < 0).any():
        raise ValueError(f"shard {shard.index}: {int((line_claim < 0).sum())} claim line(s) belong to no claim, "
                         f"e.g. claim_no {int(claim_no[line_claim < 0][0])}")
    total = np.zeros(len(claims_no))
    reimbursable = np.zeros(len(claims_no))
    if len(claim_no):
        pos = line_claim[starts]
        total[pos] = np.add.reduceat(amount, starts)
        reimbursable[pos] = np.add.reduceat(amount * w.item_reimbursable[item_np], starts)
    claims = claims.with_columns(pl.Series("total", total), pl.Series("reimbursable", reimbursable))
    local = shard.local_of(claims["pat"].to_numpy())
    ph = claims["ph"].to_numpy()
    service_region = np.where(ph >= 0, w.ph_region[np.maximum(ph, 0)], w.fac_region[claims["fac"].to_numpy()])
    cross = service_region != shard.region[local]
    setting_code = claims["setting"].replace_strict(_SETTING_CODE, return_dtype=pl.Int8).to_numpy()
    ratio = _RATIO_TABLE[shard.employee[local].astype(int), setting_code] - cross * CROSS_REGION_PENALTY
    claims = (claims.with_columns(pl.Series("service_region", service_region), pl.Series("cross_region", cross),
                                  pl.Series("ratio", ratio))
              .with_columns(pl.col("total").fill_null(0.0).round(2),
                            (pl.col("reimbursable").fill_null(0.0) * pl.col("ratio")).round(2).alias("fund_paid"))
              .with_columns((pl.col("total") - pl.col("fund_paid")).round(2).clip(0.0).alias("self_paid")))
    settle_day = pl.when(pl.col("discharge") >= 0).then(pl.col("discharge")).otherwise(pl.col("day"))
    claims_out = claims.select(
        claim_ids(pl.col("claim_no")).alias("claim_id"),
        patient_ids(pl.col("pat")).alias("patient_id"),
        _gather(w.doctor_ids, claims["doc"]).alias("doctor_id"),
        _gather(w.facility_ids, claims["fac"]).alias("facility_id"),
        pl.when(pl.col("ph") >= 0).then(
            pl.lit(w.pharmacy_ids).gather(pl.col("ph").clip(0))).otherwise(None).alias("pharmacy_id"),
        "setting",
        _days_to_date(w, pl.col("day")).alias("service_date"),
        pl.when(pl.col("admit") >= 0).then(_days_to_date(w, pl.col("admit"))).alias("admit_date"),
        pl.when(pl.col("discharge") >= 0).then(_days_to_date(w, pl.col("discharge"))).alias("discharge_date"),
        _gather(w.diag_codes, claims["diag"]).alias("diagnosis_code"),
        pl.when(pl.col("drg") >= 0).then(pl.lit(pl.Series(w.drg_codes)).gather(pl.col("drg").clip(0)))
        .alias("drg_group"),
        pl.when(pl.col("drg") >= 0).then(pl.lit(pl.Series(w.drg_weight)).gather(pl.col("drg").clip(0)))
        .alias("drg_weight"),
        pl.col("total").alias("total_amount"), "fund_paid",
        # self_paid absorbs the rounding so fund_paid + self_paid == total_amount.
        "self_paid",
        _gather(w.region_codes, claims["service_region"]).alias("region"),
        "cross_region",
        _timestamp(w, settle_day, pl.col("settle_sec")).alias("settled_at"),
    )
    # Lines are sorted by claim like claims_out: gather each line's claim id.
    lines = lines.with_columns(claims_out["claim_id"].gather(line_claim).alias("claim_id"))
    lines_out = lines.select("claim_id", "line_no", "item_type",
                             "item_code", "quantity", "days_supply", "unit_price", "amount")
    # Prescriptions of claims a typology removed are dropped (the old inner join).
    rx_row = claim_row[shard.rx["claim_no"].to_numpy() - base]
    keep = np.flatnonzero(rx_row >= 0)
    keep = keep[np.argsort(rx_row[keep], kind="stable")]
    rx_claim = pl.Series(rx_row[keep])
    rx = pl.concat([shard.rx[keep].drop("claim_no"),
                    claims.select("claim_no", "day")[rx_claim]], how="horizontal")
    # Ids of the prescription's pharmacy claim are gathered, not rebuilt.
    rx_out = rx.select(
        pl.concat_str([pl.lit("RX"), pl.col("claim_no").cast(pl.String).str.zfill(12)]).alias("rx_id"),
        claims_out["claim_id"].gather(rx_claim),
        claims_out["doctor_id"].gather(rx_claim),
        claims_out["patient_id"].gather(rx_claim),
        claims_out["pharmacy_id"].gather(rx_claim),
        _timestamp(w, pl.col("day"), pl.col("issued_sec")).alias("issued_at"),
        _timestamp(w, pl.col("day"), pl.col("issued_sec") + pl.col("fill_delay_sec")).alias("filled_at"),
        "channel",
    )
    labels = (pl.concat(shard.labels) if shard.labels else
              pl.DataFrame(schema={"claim_no": pl.Int64, "typology": pl.String, "ring_id": pl.String}))
    labels = labels.unique(subset=["claim_no", "typology"], keep="first").sort(["claim_no", "typology"])
    labels_out = labels.select(claim_ids(pl.col("claim_no")).alias("claim_id"), "typology", "ring_id")
    entities = (pl.concat(shard.entity_labels) if shard.entity_labels else
                pl.DataFrame(schema={"entity_type": pl.String, "entity_id": pl.String,
                                     "typology": pl.String, "ring_id": pl.String}))
    entities = entities.unique(subset=["entity_type", "entity_id", "typology"], keep="first").sort(
        ["entity_type", "entity_id", "typology"])
    return {
        "patients": patients_table(shard),
        "claims": claims_out,
        "claim_lines": lines_out,
        "prescriptions": rx_out,
        "pharmacy_purchases": purchases_table(shard, lines["item"].to_numpy(), lines["quantity"].to_numpy(),
                                              claims["ph"].to_numpy()[line_claim],
                                              claims["day"].to_numpy()[line_claim], claim_no),
        "labels_claims": labels_out,
        "labels_entities": entities,
        "_claims_internal": claims.select("claim_no", "pat", "doc", "ph", "fac", "day", "total"),
        "_labels_internal": labels,
    }


def purchases_table(shard: Shard, item: np.ndarray, quantity: np.ndarray, line_ph: np.ndarray,
                    line_day: np.ndarray, line_claim_no: np.ndarray) -> pl.DataFrame:
    """Monthly restocking that covers every sale except the ones a typology marks as uncovered.

    A pharmacy buys, on the first day of each month, what it sells during that month
    (rounded up to packs of 10), so purchases + opening stock stay ahead of sales at
    every date for honest pharmacies.  Inputs are per claim line, shape (lines,).
    """
    w = shard.world
    uncovered = [f["claim_no"].to_numpy() for f in shard.labels
                 if f.height and f["typology"][0] == "inventory_mismatch"]
    sale = (item < len(w.drug_price)) & (line_ph >= 0)
    if uncovered:
        sale &= ~np.isin(line_claim_no, np.concatenate(uncovered))
    n_items, months = len(w.item_price), w.config.months
    key = ((line_ph[sale].astype(np.int64) * n_items + item[sale]) * months
           + w.month_of_day[line_day[sale]])
    uniq, inverse = np.unique(key, return_inverse=True)
    sold = np.bincount(inverse, weights=quantity[sale], minlength=len(uniq))
    month = uniq % months
    ph = (uniq // months) // n_items
    drug = (uniq // months) % n_items
    columns = {"ph": [ph], "item": [drug], "day": [w.month_start_day[month]],
               "quantity": [np.ceil(sold / 10) * 10], "supplier": [w.supplier_of_pharmacy[ph]]}
    for extra in shard.extra_purchases:
        for name in columns:
            columns[name].append(extra[name].to_numpy())
    cols = {name: np.concatenate(parts) for name, parts in columns.items()}
    # One composite integer key (pharmacy, item, day) plus quantity: a 2-key lexsort.
    place = (cols["ph"].astype(np.int64) * n_items + cols["item"]) * (w.n_days + 1) + cols["day"]
    order = np.lexsort((cols["quantity"], place))
    cols = {name: values[order] for name, values in cols.items()}
    return pl.DataFrame({
        "pharmacy_id": w.pharmacy_ids.gather(cols["ph"]),
        "drug_code": pl.Series(w.item_codes).gather(cols["item"]),
        "purchase_date": pl.Series(cols["day"] + w.start_epoch, dtype=pl.Int32).cast(pl.Date),
        "quantity": cols["quantity"].astype(np.float64),
        "supplier_id": pl.Series(cols["supplier"] + 1).cast(pl.String).str.zfill(4),
    }).with_columns(("S" + pl.col("supplier_id")).alias("supplier_id"))


def opening_stock(world: World, rng: np.random.Generator, exclude: dict[int, set[int]]) -> pl.DataFrame:
    """Opening stock: a purchase row on day 0 with supplier ``OPENING`` for common drugs."""
    per_pharmacy = min(15, len(world.acute_drugs))
    ph = np.repeat(np.arange(world.n_pharmacies), per_pharmacy)
    item = np.concatenate([rng.choice(np.concatenate([world.acute_drugs, world.chronic_drugs]),
                                      per_pharmacy, replace=False) for _ in range(world.n_pharmacies)]) \
        if world.n_pharmacies <= 5000 else \
        rng.choice(np.concatenate([world.acute_drugs, world.chronic_drugs]), len(ph))
    frame = pl.DataFrame({"ph": ph, "item": item, "quantity": rng.integers(5, 50, len(ph)) * 10.0})
    frame = frame.unique(subset=["ph", "item"], keep="first", maintain_order=True)
    if exclude:
        bad = pl.DataFrame([{"ph": p, "item": i} for p, items in exclude.items() for i in items],
                           schema={"ph": pl.Int64, "item": pl.Int64})
        frame = frame.join(bad, on=["ph", "item"], how="anti")
    return frame.select(
        _gather(world.pharmacy_ids, frame["ph"]).alias("pharmacy_id"),
        _gather(world.item_codes, frame["item"]).alias("drug_code"),
        pl.lit(world.start_epoch).cast(pl.Int32).cast(pl.Date).alias("purchase_date"),
        "quantity", pl.lit("OPENING").alias("supplier_id"))


# ---------------------------------------------------------------- audits

def _audit_pick(rng: np.random.Generator, spend: np.ndarray, fraud: np.ndarray, blatant: np.ndarray,
                rate: float, bias: float, boost: float) -> np.ndarray:
    """Bernoulli audit draws favouring big spenders and blatant fraud; returns a bool mask."""
    if len(spend) == 0:
        return np.zeros(0, bool)
    weight = np.power(np.maximum(spend, 0) + 1.0, bias)
    weight = weight / weight.mean()
    weight = weight * (1 + boost * fraud * blatant)
    weight = weight / weight.mean()
    return rng.random(len(spend)) < np.clip(rate * weight, 0, 1)


def claim_audits(shard: Shard, claims: pl.DataFrame, labels: pl.DataFrame) -> pl.DataFrame:
    """Audited claims of one shard (biased sample, both fraud and honest rows)."""
    audit = shard.config.audit
    rng = shard.rng(STREAM_AUDIT)
    camo = {n: t.camouflage for n, t in shard.config.typologies.items()}
    first = labels.group_by("claim_no").agg(pl.col("typology").sort().first())
    frame = claims.join(first, on="claim_no", how="left").sort("claim_no")
    fraud = frame["typology"].is_not_null().to_numpy()
    blatant = 1 - frame["typology"].replace_strict(camo, default=0.0, return_dtype=pl.Float64).to_numpy()
    pick = _audit_pick(rng, frame["total"].to_numpy(), fraud, blatant, audit.claim_rate,
                       audit.spend_bias, audit.fraud_boost)
    chosen = frame.filter(pl.Series(pick))
    delay = rng.integers(30, 120, chosen.height)
    return chosen.select(
        pl.lit("claim").alias("entity_type"), claim_ids(pl.col("claim_no")).alias("entity_id"),
        _days_to_date(shard.world, pl.col("day") + pl.Series(delay)).alias("audited_on"),
        pl.col("typology").is_not_null().alias("is_fraud"), "typology")


def entity_audits(rng: np.random.Generator, world: World, entity_type: str, ids: pl.Series,
                  spend: np.ndarray, typology: pl.Series, blatant: np.ndarray) -> pl.DataFrame:
    """Audited entities (patients, doctors or pharmacies) with a biased draw."""
    audit = world.config.audit
    fraud = typology.is_not_null().to_numpy()
    pick = _audit_pick(rng, spend, fraud, blatant, audit.entity_rate, audit.spend_bias, audit.fraud_boost)
    n = int(pick.sum())
    day = rng.integers(world.n_days // 2, world.n_days + 60, n)
    return pl.DataFrame({
        "entity_type": entity_type, "entity_id": ids.filter(pl.Series(pick)),
        "audited_on": pl.Series(day + world.start_epoch, dtype=pl.Int32).cast(pl.Date),
        "is_fraud": fraud[pick], "typology": typology.filter(pl.Series(pick)),
    }, schema={"entity_type": pl.String, "entity_id": pl.String, "audited_on": pl.Date,
               "is_fraud": pl.Boolean, "typology": pl.String})
