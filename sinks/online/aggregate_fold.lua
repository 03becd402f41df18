-- featurestream: fold source events into one aggregation key's time tiles, exactly once.
--
-- Runs atomically inside Redis. One call folds a batch of events of ONE aggregation key (in
-- the order of their source partition's offsets). The key's hash remembers, per source
-- partition, the last offset it folded (field o|<partition>): an event at or below it is a
-- redelivery (a processor killed and restarted, a replay next to the live stream) and changes
-- nothing. So the result is exactly once in effect although Kafka delivers at least once.
--
-- KEYS[1]  the key's hash (sinks/online/aggregates.py documents the layout). Distinct-count
--          sketches live in keys KEYS[1] .. "|" .. <field>, in the same hash slot (hash tag).
-- ARGV[1]  call config, JSON: {"s": [[kind, feature, n], ...], "l": [level, ...], "ttl": ms or ""}
--          kinds: "i" Integral numbers, "f" Fractional numbers, "n" count only (String),
--                 "l" last n values, "d" distinct (HyperLogLog)
-- ARGV[2..] one event each, JSON: [partition, offset, event time ns, event time + lateness ns,
--          [tile index per level], [first tile index still read, per level],
--          [value per state, "" if null], [square per state ("i" only), else ""]]
--          All integers are canonical decimal strings: 19-digit nanosecond times do not fit a
--          Lua number (a double), so they are compared as text (cmp_dec).
--          ARGV[1]'s "b": 1 marks a backfill call (replay, rebuild, the healer): see "Two lanes";
--          its "c": the group's life (creation time in microseconds, decimal text): see "Lives".
-- Two lanes. The live processor folds from where it stands; a backfill re-reads the topic from
-- its start at the same time. One "last offset" per partition would let the live lane's newer
-- offset hide the backfill's older events as redeliveries. So each lane keeps its own:
--   live:     o|<p> last folded, s|<p> the first offset it ever folded, w|<p> its lateness mark;
--   backfill: b|<p> last folded, v|<p> its lateness mark.
-- A backfill event folds only below s|<p> (from there on the live lane has, or will have, every
-- event: it reads in offset order) and above b|<p>; a live event only above o|<p> and b|<p>. So
-- every offset is folded once, whichever lane reaches it first. A backfill event is judged late
-- against v|<p> (every offset it sees precedes the live lane's); a live event against the later
-- of w|<p> and v|<p>.
-- Lives. A group deleted and created again under its name has the same keys, and a processor
-- whose view is a second or so old still folds for the deleted life after a purge wiped its
-- keys. Left there, that state (its lanes' offsets above all) would be taken for the new life's,
-- and the new life's backfill would skip what it must fold. So the hash holds its life (field
-- "life"): a call of a later life starts the key again (sketches included), and a call of an
-- earlier life folds nothing. A key without the field (folded before lives existed) is adopted.
-- Lives are creation times, so this relies on a re-created group getting a later one than the
-- life before it (the registry's clock moving forward between a delete and a create).
-- Returns a flat list, 2 per event: code, detail. Codes: 1 folded, 3 duplicate (already
-- folded), 4 superseded (the call is of an earlier life; detail: the key's life), 10 too late
-- (detail: the partition's latest event time for this key, ns).
local FOLDED, DUPLICATE, SUPERSEDED, LATE = 1, 3, 4, 10
local key = KEYS[1]
local cfg = cjson.decode(ARGV[1])
local states, levels, ttl = cfg.s, cfg.l, cfg.ttl
local backfill = cfg.b == 1

-- cmp_dec(a, b): compare canonical decimal integers; defined in decimal.lua, which the loader
-- (sinks/online/lua.py) puts before this script.

-- Exact integer sums (Integral sum and sum of squares) as decimal text: no overflow, no rounding.
-- Digits go 7 at a time ("limbs", least significant first): a limb sum with its carry stays below
-- 2^53, so doubles add them exactly, and a 30-digit square costs 5 steps rather than 30.
local LIMB, LIMB_BASE = 7, 10000000

local function limbs(s) -- a canonical unsigned decimal, as limbs
  local out, i = {}, #s
  while i > 0 do
    out[#out + 1] = tonumber(string.sub(s, i > LIMB and i - LIMB + 1 or 1, i))
    i = i - LIMB
  end
  return out
end

local function from_limbs(out) -- limbs back to canonical text (leading zero limbs dropped)
  local top = #out
  while top > 1 and out[top] == 0 do top = top - 1 end
  local parts = {string.format("%d", out[top])}
  for k = top - 1, 1, -1 do parts[#parts + 1] = string.format("%07d", out[k]) end
  return table.concat(parts)
end

local function add_abs(a, b)
  local x, y, out, carry = limbs(a), limbs(b), {}, 0
  for k = 1, math.max(#x, #y) do
    local v = (x[k] or 0) + (y[k] or 0) + carry
    if v >= LIMB_BASE then v, carry = v - LIMB_BASE, 1 else carry = 0 end
    out[k] = v
  end
  if carry > 0 then out[#out + 1] = carry end
  return from_limbs(out)
end

local function sub_abs(a, b) -- a >= b >= 0
  local x, y, out, borrow = limbs(a), limbs(b), {}, 0
  for k = 1, #x do
    local v = x[k] - (y[k] or 0) - borrow
    if v < 0 then v, borrow = v + LIMB_BASE, 1 else borrow = 0 end
    out[k] = v
  end
  return from_limbs(out)
end

local function add_dec(a, b)
  local na, nb = string.sub(a, 1, 1) == "-", string.sub(b, 1, 1) == "-"
  local ma = na and string.sub(a, 2) or a
  local mb = nb and string.sub(b, 2) or b
  -- Both below 10^15: the sum is below 2^53, so a double holds it exactly ("%.0f" prints it whole).
  if #ma <= 15 and #mb <= 15 then
    local r = tonumber(a) + tonumber(b)
    if r == 0 then return "0" end
    return string.format("%.0f", r)
  end
  local r, neg
  if na == nb then
    r, neg = add_abs(ma, mb), na
  else
    local c = cmp_dec(ma, mb)
    if c == 0 then return "0" end
    if c > 0 then r, neg = sub_abs(ma, mb), na else r, neg = sub_abs(mb, ma), nb end
  end
  if neg and r ~= "0" then return "-" .. r end
  return r
end

local function split(s)
  local t = {}
  for part in string.gmatch(s, "[^ ]+") do t[#t + 1] = part end
  return t
end

local function fmt(x) return string.format("%.17g", x) end

-- One event into one tile state (text in, text out); v is the value, sq its square ("i").
local function fold_state(kind, n, cur, v, sq, et, part, off)
  if kind == "n" then
    return tostring((tonumber(cur) or 0) + 1)
  elseif kind == "i" then
    if not cur then return table.concat({"1", v, sq, v, v}, " ") end
    local t = split(cur)
    local mn, mx = t[4], t[5]
    if cmp_dec(v, mn) < 0 then mn = v end
    if cmp_dec(v, mx) > 0 then mx = v end
    return table.concat({tostring(tonumber(t[1]) + 1), add_dec(t[2], v), add_dec(t[3], sq), mn, mx}, " ")
  elseif kind == "f" then
    local x = tonumber(v)
    if not cur then return table.concat({"1", fmt(x), "0", fmt(x), "0", v, v}, " ") end
    local t = split(cur)
    local cnt, s, c, mean, m2 = tonumber(t[1]) + 1, tonumber(t[2]), tonumber(t[3]), tonumber(t[4]), tonumber(t[5])
    -- Neumaier's compensated sum: the tile's sum is s + c, with the rounding error of s kept in c.
    local total = s + x
    if math.abs(s) >= math.abs(x) then c = c + ((s - total) + x) else c = c + ((x - total) + s) end
    -- Welford's running mean and sum of squared deviations (for stddev).
    local d = x - mean
    mean = mean + d / cnt
    m2 = m2 + d * (x - mean)
    local mn, mx = t[6], t[7]
    if x < tonumber(mn) then mn = v end
    if x > tonumber(mx) then mx = v end
    return table.concat({tostring(cnt), fmt(total), fmt(c), fmt(mean), fmt(m2), mn, mx}, " ")
  elseif kind == "l" then
    -- Ascending by (event time, partition, offset), the order of schemas/ordering.py; keep the last n.
    local list = cur and cjson.decode(cur) or {}
    local items = #list / 4
    local pos = items + 1
    while pos > 1 do
      local b = 4 * (pos - 2)
      local c = cmp_dec(et, list[b + 1])
      if c == 0 then c = cmp_dec(part, list[b + 2]) end
      if c == 0 then c = cmp_dec(off, list[b + 3]) end
      if c >= 0 then break end
      pos = pos - 1
    end
    if items >= n and pos == 1 then return cur end -- older than every kept value
    local out = {}
    for i = 1, items + 1 do
      local src
      if i < pos then src = i elseif i > pos then src = i - 1 end
      if src then
        for k = 1, 4 do out[#out + 1] = list[4 * (src - 1) + k] end
      else
        out[#out + 1], out[#out + 2], out[#out + 3], out[#out + 4] = et, part, off, v
      end
    end
    while #out / 4 > n do
      for _ = 1, 4 do table.remove(out, 1) end
    end
    return cjson.encode(out)
  end
  error("featurestream aggregate_fold: unknown state kind " .. tostring(kind))
end

-- Drop every tile below the first index still read, per level (only when a level's mark moved).
local function prune(keep)
  local fields = redis.call("HKEYS", key)
  for _, f in ipairs(fields) do
    local kind, level, idx = string.match(f, "^(%a)|[^|]+|(%a)|(%-?%d+)$")
    if kind and keep[level] and tonumber(idx) < keep[level] then
      redis.call("HDEL", key, f)
      if kind == "d" then redis.call("DEL", key .. "|" .. f) end
    end
  end
end

-- One call reads each field of the key once and writes each once: its events (one key's) mostly
-- fold into the same tiles, and a redis.call costs more than the Lua around it. Reads go through
-- `cache` (false: the field is absent); writes stay in it, marked in `dirty`, until the end.
local cache, dirty = {}, {}
local function get(f)
  local v = cache[f]
  if v == nil then
    v = redis.call("HGET", key, f)
    cache[f] = v
  end
  return v or nil
end
local function set(f, v)
  cache[f] = v
  dirty[f] = true
end

local life = cfg.c
if life then
  local held = redis.call("HGET", key, "life")
  if held and held ~= life then
    if cmp_dec(held, life) > 0 then
      local reply = {}
      for _ = 2, #ARGV do
        reply[#reply + 1] = SUPERSEDED
        reply[#reply + 1] = held
      end
      return reply
    end
    for _, f in ipairs(redis.call("HKEYS", key)) do
      if string.sub(f, 1, 2) == "d|" then redis.call("DEL", key .. "|" .. f) end
    end
    redis.call("DEL", key)
    held = false
  end
  if not held then set("life", life) end
end

local keep = {}
for _, level in ipairs(levels) do
  if level ~= "l" then keep[level] = tonumber(get("k|" .. level)) end
end

-- A level's mark moves with most events of a fine level, so marks move in memory and the tiles
-- below them go once, after the call's last event (one HKEYS, not one per event). Nothing reads or
-- writes a tile below the mark in memory meanwhile, so the key ends as if each move pruned at once.
local moved = false
local sketches, sketch_order = {}, {} -- distinct values per sketch key, added once at the end
local late = 0
local reply = {}
for e = 2, #ARGV do
  local ev = cjson.decode(ARGV[e])
  local part, off, et, et_late = ev[1], ev[2], ev[3], ev[4]
  local code, detail = FOLDED, ""
  local seen = get("o|" .. part)
  local filled = get("b|" .. part)
  local dup = filled and tonumber(off) <= tonumber(filled)
  local mark, latest
  if backfill then
    local first = get("s|" .. part)
    -- A live state without s| (folded before the lanes existed) covers everything: fold nothing.
    dup = dup or (first and tonumber(off) >= tonumber(first)) or (not first and seen)
    mark = "v|" .. part
    latest = get(mark)
  else
    dup = dup or (seen and tonumber(off) <= tonumber(seen))
    mark = "w|" .. part
    latest = get(mark)
    local other = get("v|" .. part)
    if other and (not latest or cmp_dec(other, latest) > 0) then latest = other end
  end
  if dup then
    code = DUPLICATE
  else
    if backfill then
      set("b|" .. part, off)
    else
      set("o|" .. part, off)
      if not get("s|" .. part) then set("s|" .. part, off) end
    end
    if latest and cmp_dec(et_late, latest) < 0 then
      code, detail = LATE, latest
      late = late + 1
    else
      local own = get(mark)
      if not own or cmp_dec(et, own) > 0 then set(mark, et) end
      for li, level in ipairs(levels) do
        if level ~= "l" then
          local k = tonumber(ev[6][li])
          if not keep[level] or k > keep[level] then
            keep[level] = k
            set("k|" .. level, ev[6][li])
            moved = true
          end
        end
      end
      for si, st in ipairs(states) do
        local kind, feature, n = st[1], st[2], st[3]
        local v = ev[7][si]
        if v ~= "" then
          for li, level in ipairs(levels) do
            local idx = ev[5][li]
            if level == "l" or tonumber(idx) >= keep[level] then
              local field = kind .. "|" .. feature .. "|" .. level .. "|" .. idx
              if kind == "d" then
                if not get(field) then set(field, "1") end
                local sketch = key .. "|" .. field
                local values = sketches[sketch]
                if not values then
                  values = {}
                  sketches[sketch] = values
                  sketch_order[#sketch_order + 1] = sketch
                end
                values[#values + 1] = v
              else
                local cur = get(field)
                local new = fold_state(kind, n, cur, v, ev[8][si], et, part, off)
                if new ~= cur then set(field, new) end
              end
            end
          end
        end
      end
    end
  end
  reply[#reply + 1] = code
  reply[#reply + 1] = detail
end

-- Write back: fields, then sketches, then the prune (which drops tiles, and their sketches, that
-- fell below a mark during the call).
local out = {}
for f in pairs(dirty) do
  out[#out + 1] = f
  out[#out + 1] = cache[f]
end
for i = 1, #out, 1000 do redis.call("HSET", key, unpack(out, i, math.min(i + 999, #out))) end
if late > 0 then redis.call("HINCRBY", key, "late", late) end
for _, sketch in ipairs(sketch_order) do
  local values = sketches[sketch]
  for i = 1, #values, 1000 do redis.call("PFADD", sketch, unpack(values, i, math.min(i + 999, #values))) end
  if ttl ~= "" then redis.call("PEXPIRE", sketch, ttl) end
end
if moved then prune(keep) end
if ttl ~= "" then redis.call("PEXPIRE", key, ttl) end
return reply
