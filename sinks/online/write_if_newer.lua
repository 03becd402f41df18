-- featurestream: apply puts and deletes to record hashes, each only if it is newer.
--
-- Runs atomically inside Redis, so concurrent writers (several stream workers, a replay
-- next to the live stream) can never interleave a read-compare-write: this is what makes
-- the online store correct under duplicates, replays and out-of-order arrival.
--
-- One call applies a batch of records (one is a batch too): a call per record made the
-- client's packing and reply parsing the processor's largest cost. On Redis Cluster every key
-- of one call must hash to the same slot; the caller groups them (sinks/online/store.py).
--
-- KEYS[i]  record i's hash (see sinks/online/README.md for the layout), i = 1..#KEYS
-- ARGV     10 per record; record i's are ARGV[10*(i-1) + 1 .. 10*(i-1) + 10]:
--   1  op: "put" | "soft" (soft delete) | "hard" (hard delete)
--   2  event time, integer nanoseconds since the epoch, canonical decimal (may be negative)
--   3  Kafka partition, 4 Kafka offset: canonical decimals (the write order)
--      2..4 are the version key of schemas/ordering.py (script_args), compared in that
--      order: that module, not this script, defines which record wins.
--   5  "1" if the message's expires-at is already in the past (decided by the caller's clock)
--   6  expires-at in ns ("" if no TTL applies), 7 the same in ms for PEXPIREAT
--   8  schema version of the group the message was validated against
--   9  put: a JSON array [name, value, name, value, ...] whose values are the fields' stored
--      text (itself JSON). One argument instead of one per field, because packing arguments
--      is the client's main cost on a batch. "" for deletes.
--   10 the group's life: its creation time in microseconds, canonical decimal (see "Lives")
--
-- Lives. A group deleted and created again under its name has the same keys. Whatever the first
-- life left there (a delete without purge, or records a processor applied after the purge, its
-- view a second old) must not be taken for the new life's: a put of the new life older than it
-- would be refused as stale, and the old record served. So each hash holds its life (__life): a
-- write of a later life treats a hash of an earlier life as absent (and removes it), and a write
-- of an earlier life never touches a later life's hash (answered STALE). Reads serve only their
-- own life's hashes (sinks/online/codec.py, of_life). A hash without __life (written before
-- lives existed) is taken as the writer's life. Lives are creation times: this relies on a
-- re-created group getting a later one than the life before it.
--
-- Returns a flat list, 3 per record: code, stored __et or "", stored __seq or "". Codes are
-- mirrored in status.py. A key that is not a hash answers FOREIGN with Redis's error text in
-- place of __et, and the rest of the batch is still applied.
--
-- Every write goes through redis.pcall: a write Redis refuses (OOM under maxmemory with
-- noeviction, MISCONF, ...) fails only its own record, which answers FAILED with Redis's error
-- text in place of __et, and the rest of the batch is still applied. (With redis.call the first
-- refusal aborted the script after earlier records had landed, and the caller could not tell
-- which.) Redis scripts are not rolled back, so every record's outcome must be reported.
local APPLIED, STALE, DUPLICATE, EXPIRED, DELETED, REJECTED, CORRUPT, FOREIGN, FAILED = 1, 2, 3, 4, 5, 6, 7, 8, 9
local STRIDE = 10

-- A write that raises a Lua error carrying Redis's reason when Redis refuses it; the loop at the
-- bottom catches it and reports the record FAILED.
local dirty = false
local function w(...)
  local r = redis.pcall(...)
  if type(r) == "table" and r.err then error({fs_refused = r.err}) end
  dirty = true
  return r
end

-- Redis checks maxmemory (noeviction) only at a script's first write command, and only if that
-- command may grow memory: once any write ran, every later one is let through. Our writes start
-- with a DEL (which never grows memory), so without this probe a full Redis would accept every
-- record beyond maxmemory. Before the first write of the call that adds data, a one-field HSET on
-- the record's own key (removed by the DEL that follows) asks Redis: refused, this record FAILED
-- with Redis's OOM error and nothing changed; let through, the rest of the call goes on.
local function may_grow(key)
  if not dirty then w("HSET", key, "__probe", "1") end
end

-- Lua numbers are doubles: a 19-digit nanosecond time does not fit exactly, so integers are
-- compared as canonical decimal strings (sign, then length, then digits).
local function canonical(s)
  return s == "0" or string.match(s, "^%-?[1-9]%d*$") ~= nil
end

-- cmp_dec(a, b): compare canonical decimal integers; defined in decimal.lua, which the loader
-- (sinks/online/lua.py) puts before this script.

-- Apply one record; returns code, stored __et, stored __seq.
local function apply_one(key, op, et, part, off, expired, exp_ns, exp_ms, version, blob, life)
  local cur = redis.pcall("HMGET", key, "__et", "__seq", "__life")
  if cur.err then return FOREIGN, cur.err, "" end
  local cur_et, cur_seq, cur_life = cur[1], cur[2], cur[3]
  if cur_life and cur_life ~= life then
    if not canonical(cur_life) then return CORRUPT, tostring(cur_et), tostring(cur_seq) end
    if cmp_dec(cur_life, life) > 0 then return STALE, cur_et or "", cur_seq or "" end
    may_grow(key) -- before this first write: a DEL would let every later one past maxmemory
    w("DEL", key) -- an earlier life's: gone, as if it had never been
    cur_et, cur_seq = false, false
  end
  if cur_et then
    local p, o
    if cur_seq then p, o = string.match(cur_seq, "^(%d+):(%d+)$") end
    if not canonical(cur_et) or not p or not canonical(p) or not canonical(o) then
      -- Someone else wrote this hash: refuse to guess, the caller reports it.
      return CORRUPT, tostring(cur_et), tostring(cur_seq)
    end
    local c = cmp_dec(et, cur_et)
    if c == 0 then c = cmp_dec(part, p) end
    if c == 0 then c = cmp_dec(off, o) end
    if c == 0 then return DUPLICATE, cur_et, cur_seq end
    if c < 0 then
      -- A put, soft or hard delete older than the stored record is historic: the offline store
      -- keeps it, the online record stays. (A hard delete used to be refused here and so
      -- dead-lettered; the door now refuses one it can see is older, and the dead-letter topic
      -- is only for what never passed a door.)
      return STALE, cur_et, cur_seq
    end
  else
    cur_et, cur_seq = "", ""
  end

  local seq = part .. ":" .. off

  if op == "put" then
    if expired == "1" then
      if cur_et ~= "" then
        -- The newest record is already expired: hide the older one (never resurrect it) with
        -- a tombstone that lives as long as the older record would have.
        local pttl = redis.call("PTTL", key)
        may_grow(key)
        w("DEL", key)
        w("HSET", key, "__et", et, "__seq", seq, "__del", "expired", "__v", version, "__life", life)
        if pttl > 0 then w("PEXPIRE", key, pttl) end
      end
      return EXPIRED, cur_et, cur_seq
    end
    -- A put is a full overwrite: features not given become null (absent).
    may_grow(key)
    w("DEL", key)
    -- cjson.decode is exact here: every element is a string (numbers were encoded by the caller).
    -- Meta fields ride in the same HSET as the features: one call per put is the script's cost.
    local fields = cjson.decode(blob)
    local n = #fields
    fields[n + 1], fields[n + 2], fields[n + 3], fields[n + 4] = "__et", et, "__seq", seq
    fields[n + 5], fields[n + 6], fields[n + 7], fields[n + 8] = "__v", version, "__life", life
    n = n + 8
    if exp_ms ~= "" then
      fields[n + 1], fields[n + 2] = "__exp", exp_ns
      n = n + 2
    end
    -- HSET in chunks: unpack() of thousands of values would overflow Lua's C stack.
    local i = 1
    while i <= n do
      local j = math.min(i + 999, n)
      w("HSET", key, unpack(fields, i, j))
      i = j + 1
    end
    if exp_ms ~= "" then w("PEXPIREAT", key, exp_ms) end
    return APPLIED, cur_et, cur_seq
  elseif op == "soft" then
    if expired ~= "1" then may_grow(key) end
    w("DEL", key)
    if expired ~= "1" then
      -- Keep a tombstone so that older puts arriving later are still rejected.
      w("HSET", key, "__et", et, "__seq", seq, "__del", "1", "__v", version, "__life", life)
      if exp_ms ~= "" then
        w("HSET", key, "__exp", exp_ns)
        w("PEXPIREAT", key, exp_ms)
      end
    end
    return DELETED, cur_et, cur_seq
  elseif op == "hard" then
    -- Removed entirely: an older put may be accepted again afterwards (SageMaker semantics).
    w("DEL", key)
    return DELETED, cur_et, cur_seq
  end
  error("featurestream write_if_newer: unknown op " .. tostring(op))
end

local reply = {}
for i = 1, #KEYS do
  local b = STRIDE * (i - 1)
  local ok, code, cur_et, cur_seq = pcall(apply_one, KEYS[i], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3],
    ARGV[b + 4], ARGV[b + 5], ARGV[b + 6], ARGV[b + 7], ARGV[b + 8], ARGV[b + 9], ARGV[b + 10])
  if not ok then
    local reason = code
    if type(reason) == "table" then reason = reason.fs_refused or reason.err end
    code, cur_et, cur_seq = FAILED, tostring(reason), ""
  end
  reply[3 * i - 2], reply[3 * i - 1], reply[3 * i] = code, cur_et, cur_seq
end
return reply
