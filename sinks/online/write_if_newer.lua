-- featurestream: apply one put or delete to one record hash, only if it is newer.
--
-- Runs atomically inside Redis, so concurrent writers (several stream workers, a replay
-- next to the live stream) can never interleave a read-compare-write: this is what makes
-- the online store correct under duplicates, replays and out-of-order arrival.
--
-- KEYS[1]  the record's hash (see sinks/online/README.md for the layout)
-- ARGV[1]  op: "put" | "soft" (soft delete) | "hard" (hard delete)
-- ARGV[2]  event time, integer nanoseconds since the epoch, canonical decimal (may be negative)
-- ARGV[3]  Kafka partition, ARGV[4] Kafka offset: canonical decimals (the write order)
--          ARGV[2..4] are the version key of schemas/ordering.py (script_args), compared in
--          that order: that module, not this script, defines which record wins.
-- ARGV[5]  "1" if the message's expires-at is already in the past (decided by the caller's clock)
-- ARGV[6]  expires-at in ns ("" if no TTL applies), ARGV[7] the same in ms for PEXPIREAT
-- ARGV[8]  schema version of the group the message was validated against
-- ARGV[9]  put only: a JSON array [name, value, name, value, ...] whose values are the
--          fields' stored text (itself JSON). One argument instead of one per field, because
--          packing arguments is the client's main cost on a batch.
--
-- Returns {code, stored __et or "", stored __seq or ""}; codes are mirrored in status.py.
local APPLIED, STALE, DUPLICATE, EXPIRED, DELETED, REJECTED, CORRUPT = 1, 2, 3, 4, 5, 6, 7

local key = KEYS[1]
local op, et, part, off = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local expired, exp_ns, exp_ms, version = ARGV[5], ARGV[6], ARGV[7], ARGV[8]

-- Lua numbers are doubles: a 19-digit nanosecond time does not fit exactly, so integers are
-- compared as canonical decimal strings (sign, then length, then digits).
local function canonical(s)
  return s == "0" or string.match(s, "^%-?[1-9]%d*$") ~= nil
end

local function cmp_dec(a, b)
  local neg_a = string.sub(a, 1, 1) == "-"
  local neg_b = string.sub(b, 1, 1) == "-"
  if neg_a ~= neg_b then
    if neg_a then return -1 end
    return 1
  end
  local r = 0
  if #a ~= #b then
    if #a < #b then r = -1 else r = 1 end
  elseif a ~= b then
    if a < b then r = -1 else r = 1 end
  end
  if neg_a then r = -r end
  return r
end

local cur = redis.call("HMGET", key, "__et", "__seq")
local cur_et, cur_seq = cur[1], cur[2]
if cur_et then
  local p, o
  if cur_seq then p, o = string.match(cur_seq, "^(%d+):(%d+)$") end
  if not canonical(cur_et) or not p or not canonical(p) or not canonical(o) then
    -- Someone else wrote this hash: refuse to guess, the caller reports it.
    return {CORRUPT, tostring(cur_et), tostring(cur_seq)}
  end
  local c = cmp_dec(et, cur_et)
  if c == 0 then c = cmp_dec(part, p) end
  if c == 0 then c = cmp_dec(off, o) end
  if c == 0 then return {DUPLICATE, cur_et, cur_seq} end
  if c < 0 then
    if op == "hard" then return {REJECTED, cur_et, cur_seq} end
    return {STALE, cur_et, cur_seq}
  end
else
  cur_et, cur_seq = "", ""
end

local seq = part .. ":" .. off

local function set_expiry()
  if exp_ms ~= "" then
    redis.call("HSET", key, "__exp", exp_ns)
    redis.call("PEXPIREAT", key, exp_ms)
  end
end

if op == "put" then
  if expired == "1" then
    if cur_et ~= "" then
      -- The newest record is already expired: hide the older one (never resurrect it) with
      -- a tombstone that lives as long as the older record would have.
      local pttl = redis.call("PTTL", key)
      redis.call("DEL", key)
      redis.call("HSET", key, "__et", et, "__seq", seq, "__del", "expired", "__v", version)
      if pttl > 0 then redis.call("PEXPIRE", key, pttl) end
    end
    return {EXPIRED, cur_et, cur_seq}
  end
  -- A put is a full overwrite: features not given become null (absent).
  redis.call("DEL", key)
  -- cjson.decode is exact here: every element is a string (numbers were encoded by the caller).
  -- Meta fields ride in the same HSET as the features: one call per put is the script's cost.
  local fields = cjson.decode(ARGV[9] or "[]")
  local n = #fields
  fields[n + 1], fields[n + 2], fields[n + 3], fields[n + 4] = "__et", et, "__seq", seq
  fields[n + 5], fields[n + 6] = "__v", version
  n = n + 6
  if exp_ms ~= "" then
    fields[n + 1], fields[n + 2] = "__exp", exp_ns
    n = n + 2
  end
  -- HSET in chunks: unpack() of thousands of values would overflow Lua's C stack.
  local i = 1
  while i <= n do
    local j = math.min(i + 999, n)
    redis.call("HSET", key, unpack(fields, i, j))
    i = j + 1
  end
  if exp_ms ~= "" then redis.call("PEXPIREAT", key, exp_ms) end
  return {APPLIED, cur_et, cur_seq}
elseif op == "soft" then
  redis.call("DEL", key)
  if expired ~= "1" then
    -- Keep a tombstone so that older puts arriving later are still rejected.
    redis.call("HSET", key, "__et", et, "__seq", seq, "__del", "1", "__v", version)
    set_expiry()
  end
  return {DELETED, cur_et, cur_seq}
elseif op == "hard" then
  -- Removed entirely: an older put may be accepted again afterwards (SageMaker semantics).
  redis.call("DEL", key)
  return {DELETED, cur_et, cur_seq}
end
return redis.error_reply("featurestream write_if_newer: unknown op " .. tostring(op))
