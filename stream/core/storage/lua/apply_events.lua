-- Not run by recstream since the twenty-sixth session: the per-user update is computed in the worker
-- (stream/core/storage/update.py, written back by profile_put.lua). Kept as the reference that update.py is
-- held to, reply by reply and key by key, on a real redis-server (tests/test_profile_update.py).
-- Apply one user's events to the user's own keys, idempotently and atomically (a Lua script runs whole or
-- not at all). Called once per user per batch (pipelined: one round-trip per batch). It touches nothing but
-- the user's keys (one hash tag, one Redis Cluster slot): the shared statistics these events feed
-- (co-visitation, co-occurrence, trending, popularity) are returned, not written, and the caller adds them
-- up over the batch (stream/core/storage/shared.py).
-- KEYS: the user's hash, :seq, :aff, :bought, :seen, :out (stream/core/storage/store.py builds them)
-- ARGV: half_life_ms, max_seq, covis_n, seen_cap, session_gap_ms, max_aff,
--       bot_per_min (a user with more events than this in the last event-time minute is bot-like:
--       the events still update the user's own profile and counters, but no shared statistic),
--       keep_from (the outbox keeps entries at offsets >= this; "" = leave it),
--       then 10 fields per event: event_id, type, item_id, ts, category, brand, weight, price ("" = unknown),
--       search query ("" = none), offset of its message ("" = none)
-- The outbox (:out, offset -> what the event feeds) holds each fed event's shared part until its batch's
-- offsets are committed: an event redelivered after a crash between this script and the shared writes is
-- "seen" here, and its shared part is returned again from the outbox (the shared writes are offset-guarded).
-- Returns: { applied_flags (a character per event: 0 = seen before, 1 = applied, 2 = applied but bot-like),
--            recent items (newest first), aff fields+values, bought (recent), last_ts,
--            {prev_ts, last_type, log-price sum, priced events, query, touch times},
--            {event index (1-based), shared part, ...} }  where a shared part is cjson
--            {"v": [items it follows (co-visitation)], "s": [items it co-occurs with],
--             "h": the user's recent items before it (their stage; popularity per stage)}
local hl = tonumber(ARGV[1])
local max_seq, covis_n, seen_cap = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local gap, max_aff, bot_per_min = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local keep_from = tonumber(ARGV[8])
local HEAD, PER = 8, 10
local cooc_n = 5          -- co-occurrence: the user's last distinct items a new item co-occurs with
local U, SEQ, AFF, BOUGHT, SEEN, OUT = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]

-- The user's state is read once, changed in Lua, and written once at the end (a command from Lua costs
-- about as much as the work it does: this keeps the calls per user call near-constant).
local u = redis.call("HMGET", U, "last_ts", "prev_ts", "last_type", "plog", "pn", "q", "rts")
local last_ts, prev_ts, last_type, plog, pn, query = tonumber(u[1] or "0"), u[2] or "0", u[3] or "", u[4] or "0", u[5] or "0", u[6]
local seq = redis.call("LRANGE", SEQ, 0, max_seq - 1)          -- newest first
-- "rts": when the user last touched each item of the sequence (ms, comma-separated, same order; 0 = unknown,
-- a profile written before it was kept)
local seq_ts = {}
for t in string.gmatch(u[7] or "", "[^,]+") do seq_ts[#seq_ts + 1] = t end
while #seq_ts < #seq do seq_ts[#seq_ts + 1] = "0" end
while #seq_ts > #seq do seq_ts[#seq_ts] = nil end
local aff, naff, aff_set, aff_del = {}, 0, {}, {}
local flat = redis.call("HGETALL", AFF)
for i = 1, #flat, 2 do aff[flat[i]] = flat[i + 1]; naff = naff + 1 end
local n = (#ARGV - HEAD) / PER

local function decayed_add(field, w, ts)
  -- value stored as "v|ref_ts": value at ref_ts; exponential decay with half-life hl
  local cur = aff[field]
  local v, ref = 0.0, ts
  if cur then
    local sep = string.find(cur, "|", 1, true)
    v, ref = tonumber(string.sub(cur, 1, sep - 1)), tonumber(string.sub(cur, sep + 1))
  else
    naff = naff + 1
  end
  if ts >= ref then
    v = v * math.pow(2, -(ts - ref) / hl) + w
    ref = ts
  else
    v = v + w * math.pow(2, -(ref - ts) / hl)
  end
  aff[field] = string.format("%.10g|%d", v, ref)
  aff_set[field], aff_del[field] = true, nil
end

local function forget_weakest(ts)
  -- forget the weakest affinity (value decayed to the newest reference time)
  local worst, worst_v = nil, nil
  for k, val in pairs(aff) do
    local s = string.find(val, "|", 1, true)
    local v = tonumber(string.sub(val, 1, s - 1)) * math.pow(2, -(ts - tonumber(string.sub(val, s + 1))) / hl)
    if worst_v == nil or v < worst_v or (v == worst_v and k < worst) then worst, worst_v = k, v end
  end
  aff[worst], aff_set[worst], aff_del[worst] = nil, nil, true
  naff = naff - 1
end

if keep_from then
  local fields = redis.call("HKEYS", OUT)
  for i = 1, #fields do
    if tonumber(fields[i]) < keep_from then redis.call("HDEL", OUT, fields[i]) end
  end
end

-- which events were applied before: one ZMSCORE; the bot rule's window from one range read
local ids, min_ts = {}, nil
for e = 0, n - 1 do
  ids[#ids + 1] = ARGV[HEAD + e * PER + 1]
  local ts = tonumber(ARGV[HEAD + e * PER + 4])
  if min_ts == nil or ts < min_ts then min_ts = ts end
end
local known = n > 0 and redis.call("ZMSCORE", SEEN, unpack(ids)) or {}
local card = redis.call("ZCARD", SEEN)
local oldest = nil
local recent = {}                           -- timestamps of applied events that a bot window may count
if n > 0 then
  local r = redis.call("ZRANGE", SEEN, min_ts - 60000, "+inf", "BYSCORE", "WITHSCORES")
  for i = 2, #r, 2 do recent[#recent + 1] = tonumber(r[i]) end
end
local function in_window(ts)
  local c = 0
  for i = 1, #recent do if recent[i] >= ts - 60000 and recent[i] <= ts then c = c + 1 end end
  return c
end

local flags, shared, counts, pushed, fresh_ts, fresh_ids, outbox = {}, {}, {}, {}, {}, {}, {}
local user_changed = false
for e = 0, n - 1 do
  local b = HEAD + e * PER
  local eid, etype, item, ts = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], tonumber(ARGV[b + 4])
  local cat, brand, w, price = ARGV[b + 5], ARGV[b + 6], tonumber(ARGV[b + 7]), tonumber(ARGV[b + 8])
  local offset = ARGV[b + 10]
  local fresh = not known[e + 1] and not fresh_ts[eid]
  if fresh and card >= seen_cap then
    -- older than everything remembered: it was applied long ago (or is too late to matter)
    if oldest == nil then oldest = tonumber(redis.call("ZRANGE", SEEN, 0, 0, "WITHSCORES")[2] or "-1") end
    if ts < oldest then fresh = false end
  end
  if not fresh then
    flags[#flags + 1] = "0"
    if offset ~= "" then
      local kept = redis.call("HGET", OUT, offset)
      if kept then shared[#shared + 1] = e + 1; shared[#shared + 1] = kept end
    end
  else
    fresh_ts[eid] = ts
    fresh_ids[#fresh_ids + 1] = eid
    card = card + 1
    recent[#recent + 1] = ts
    counts[etype] = (counts[etype] or 0) + 1
    local learn = in_window(ts) <= bot_per_min
    if not learn then counts["bot_flagged"] = (counts["bot_flagged"] or 0) + 1 end
    flags[#flags + 1] = learn and "1" or "2"
    local last = last_ts
    if ts >= last_ts then
      last_ts, prev_ts, last_type, user_changed = ts, last, etype, true
    end
    if ARGV[b + 9] ~= "" then query, user_changed = ARGV[b + 9], true end
    if item ~= "" then
      if price and price > 0 and (etype == "add_to_cart" or etype == "purchase") then
        -- the user's usual price: mean log-price of what they put in the cart or bought
        plog = redis.call("HINCRBYFLOAT", U, "plog", math.log(price))
        pn = redis.call("HINCRBY", U, "pn", 1)
      end
      local prev, stage = {}, #seq          -- stage: the user's recent items before this event (capped at max_seq)
      for i = 1, math.min(#seq, math.max(covis_n, 3 * cooc_n)) do prev[i] = seq[i] end
      if prev[1] ~= item then
        table.insert(seq, 1, item)
        table.insert(seq_ts, 1, tostring(ts))
        if #seq > max_seq then seq[#seq] = nil; seq_ts[#seq_ts] = nil end
        pushed[#pushed + 1] = item
        user_changed = true
      elseif ts > tonumber(seq_ts[1]) then
        seq_ts[1] = tostring(ts)                 -- the newest item again (a funnel on one item): touched now
        user_changed = true
      end
      if cat ~= "" then decayed_add("c:" .. cat, w, ts) end
      if brand ~= "" then decayed_add("b:" .. brand, w, ts) end
      while naff > max_aff do forget_weakest(ts) end   -- an event can bring two new fields
      if etype == "purchase" then
        redis.call("ZADD", BOUGHT, ts, item)
        if redis.call("ZCARD", BOUGHT) > 100 then redis.call("ZREMRANGEBYRANK", BOUGHT, 0, 0) end
      end
      if learn then
        -- sequential co-visitation: "after p, users went to item", when the user moves to another item
        -- within the session gap (a view->click->cart funnel on one item counts once)
        local follows, done = {}, {}
        if ts - last <= gap and prev[1] ~= nil and prev[1] ~= item then
          for i = 1, math.min(#prev, covis_n) do
            local p = prev[i]
            if p ~= item and not done[p] then
              done[p] = true
              follows[#follows + 1] = p
            end
          end
        end
        -- co-occurrence (the textbook symmetric co-visitation): an item new among the user's last `cooc_n`
        -- distinct items co-occurs once, both ways, with each of them, at any time gap
        local last_distinct, taken, is_new = {}, {}, true
        for i = 1, #prev do
          local p = prev[i]
          if p == item then is_new = false break end
          if not taken[p] then
            taken[p] = true
            last_distinct[#last_distinct + 1] = p
            if #last_distinct >= cooc_n then break end
          end
        end
        if not is_new then last_distinct = {} end
        local part = cjson.encode({ v = follows, s = last_distinct, h = stage })
        shared[#shared + 1] = e + 1
        shared[#shared + 1] = part
        if offset ~= "" then
          outbox[#outbox + 1] = offset
          outbox[#outbox + 1] = part
        end
      end
    end
  end
end

-- the writes, once
if #fresh_ids > 0 then
  local z = {}
  for i = 1, #fresh_ids do z[#z + 1] = fresh_ts[fresh_ids[i]]; z[#z + 1] = fresh_ids[i] end
  redis.call("ZADD", SEEN, unpack(z))
  if card > seen_cap then redis.call("ZREMRANGEBYRANK", SEEN, 0, card - seen_cap - 1) end
end
for k, c in pairs(counts) do redis.call("HINCRBY", U, "n:" .. k, c) end
if user_changed then
  local h = { "last_ts", last_ts, "prev_ts", prev_ts, "last_type", last_type, "rts", table.concat(seq_ts, ",") }
  if query then h[#h + 1] = "q"; h[#h + 1] = query end
  redis.call("HSET", U, unpack(h))
end
if #pushed > 0 then
  redis.call("LPUSH", SEQ, unpack(pushed))
  redis.call("LTRIM", SEQ, 0, max_seq - 1)
end
local hset, hdel = {}, {}
for k, _ in pairs(aff_set) do hset[#hset + 1] = k; hset[#hset + 1] = aff[k] end
for k, _ in pairs(aff_del) do hdel[#hdel + 1] = k end
if #hset > 0 then redis.call("HSET", AFF, unpack(hset)) end
if #hdel > 0 then redis.call("HDEL", AFF, unpack(hdel)) end
if #outbox > 0 then
  redis.call("HSET", OUT, unpack(outbox))
  redis.call("PEXPIRE", OUT, 86400000)
end
local aff_flat = {}
for k, v in pairs(aff) do aff_flat[#aff_flat + 1] = k; aff_flat[#aff_flat + 1] = v end
local bought = redis.call("ZREVRANGE", BOUGHT, 0, 19)
return { table.concat(flags), seq, aff_flat, bought, tostring(last_ts),
         { tostring(prev_ts), last_type, plog, pn, query or "", table.concat(seq_ts, ",") }, shared }
