-- Apply one user's events to Redis, idempotently and atomically (a Lua script runs whole or not at all).
-- Called once per user per batch (pipelined: one round-trip per batch).
-- KEYS: the user's hash, :seq, :aff, :bought, :seen (stream/store.py builds them: ids escaped, one hash tag)
-- ARGV: prefix, guard ("1": refuse to write unless the store's marker {P}meta:live exists, i.e. the store
--       was not emptied behind our back; "0" for `recstream rebuild`), half_life_ms, max_seq, covis_n,
--       seen_cap, trend_hl_ms, session_gap_ms, max_aff,
--       bot_per_min (a user with more events than this in the last event-time minute is bot-like:
--       the events still update the user's own profile and counters, but not co-visitation or trending),
--       then 9 fields per event: event_id, type, item_id, ts, category, brand, weight, price ("" = unknown),
--       search query ("" = none)
-- Returns: { applied_flags (a character per event: 0 = seen before, 1 = applied, 2 = applied but bot-like),
--            recent items (newest first), aff fields+values, bought (recent), last_ts,
--            {prev_ts, last_type, log-price sum, priced events} }
local P, guard = ARGV[1], ARGV[2]
if guard == "1" and redis.call("EXISTS", P .. "meta:live") == 0 then
  return redis.error_reply("RECSTREAM_EMPTIED the store has no marker " .. P .. "meta:live: it was emptied")
end
local hl = tonumber(ARGV[3])
local max_seq, covis_n, seen_cap = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local trend_hl, gap, max_aff = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local covis_cap = 100
local cooc_n = 5          -- co-occurrence: the user's last distinct items a new item co-occurs with
local bot_per_min = tonumber(ARGV[10])
local U, SEQ, AFF, BOUGHT, SEEN = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local EPOCH = 64 * trend_hl

-- an id inside a key name, escaped like stream/store.py's key_part: % : { } -> %25 %3A %7B %7D
local function enc(id)
  return (string.gsub(id, "[%%:{}]", function(c) return string.format("%%%02X", string.byte(c)) end))
end

local function decayed_add(field, w, ts)
  -- value stored as "v|ref_ts": value at ref_ts; exponential decay with half-life hl
  local cur = redis.call("HGET", AFF, field)
  local v, ref = 0.0, ts
  if cur then
    local sep = string.find(cur, "|", 1, true)
    v, ref = tonumber(string.sub(cur, 1, sep - 1)), tonumber(string.sub(cur, sep + 1))
  end
  if ts >= ref then
    v = v * math.pow(2, -(ts - ref) / hl) + w
    ref = ts
  else
    v = v + w * math.pow(2, -(ref - ts) / hl)
  end
  redis.call("HSET", AFF, field, string.format("%.10g|%d", v, ref))
end

local flags = {}
local n = (#ARGV - 10) / 9
for e = 0, n - 1 do
  local b = 10 + e * 9
  local eid, etype, item, ts = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], tonumber(ARGV[b + 4])
  local cat, brand, w, price = ARGV[b + 5], ARGV[b + 6], tonumber(ARGV[b + 7]), tonumber(ARGV[b + 8])
  local fresh = not redis.call("ZSCORE", SEEN, eid)
  if fresh and redis.call("ZCARD", SEEN) >= seen_cap then
    -- older than everything remembered: it was applied long ago (or is too late to matter)
    local oldest = redis.call("ZRANGE", SEEN, 0, 0, "WITHSCORES")
    if oldest[2] and ts < tonumber(oldest[2]) then fresh = false end
  end
  if not fresh then
    flags[#flags + 1] = "0"
  else
    redis.call("ZADD", SEEN, ts, eid)
    local card = redis.call("ZCARD", SEEN)
    if card > seen_cap then redis.call("ZREMRANGEBYRANK", SEEN, 0, card - seen_cap - 1) end
    redis.call("HINCRBY", U, "n:" .. etype, 1)
    local learn = redis.call("ZCOUNT", SEEN, ts - 60000, ts) <= bot_per_min
    if not learn then redis.call("HINCRBY", U, "n:bot_flagged", 1) end
    flags[#flags + 1] = learn and "1" or "2"
    local last = tonumber(redis.call("HGET", U, "last_ts") or "0")
    if ts >= last then redis.call("HSET", U, "last_ts", ts, "prev_ts", last, "last_type", etype) end
    if ARGV[b + 9] ~= "" then redis.call("HSET", U, "q", ARGV[b + 9]) end
    if item ~= "" then
      if cat == "" or brand == "" then
        local meta = redis.call("HMGET", P .. "i:" .. enc(item), "cat", "brand")
        if cat == "" and meta[1] then cat = meta[1] end
        if brand == "" and meta[2] then brand = meta[2] end
      end
      if price == nil and (etype == "add_to_cart" or etype == "purchase") then
        price = tonumber(redis.call("HGET", P .. "i:" .. enc(item), "price") or "")
      end
      if price and price > 0 and (etype == "add_to_cart" or etype == "purchase") then
        -- the user's usual price: mean log-price of what they put in the cart or bought
        redis.call("HINCRBYFLOAT", U, "plog", math.log(price))
        redis.call("HINCRBY", U, "pn", 1)
      end
      if cat ~= "" then redis.call("HSETNX", P .. "i:" .. enc(item), "cat", cat) end
      local prev = redis.call("LRANGE", SEQ, 0, math.max(covis_n, 3 * cooc_n) - 1)
      if prev[1] ~= item then
        redis.call("LPUSH", SEQ, item)
        redis.call("LTRIM", SEQ, 0, max_seq - 1)
      end
      if cat ~= "" then decayed_add("c:" .. cat, w, ts) end
      if brand ~= "" then decayed_add("b:" .. brand, w, ts) end
      if redis.call("HLEN", AFF) > max_aff then
        -- forget the weakest affinity (value decayed to the newest reference time)
        local all = redis.call("HGETALL", AFF)
        local worst, worst_v = nil, nil
        for i = 1, #all, 2 do
          local s = string.find(all[i + 1], "|", 1, true)
          local v = tonumber(string.sub(all[i + 1], 1, s - 1)) * math.pow(2, -(ts - tonumber(string.sub(all[i + 1], s + 1))) / hl)
          if worst_v == nil or v < worst_v then worst, worst_v = all[i], v end
        end
        redis.call("HDEL", AFF, worst)
      end
      if etype == "purchase" then
        redis.call("ZADD", BOUGHT, ts, item)
        if redis.call("ZCARD", BOUGHT) > 100 then redis.call("ZREMRANGEBYRANK", BOUGHT, 0, 0) end
      end
      if learn then
        -- co-visitation with the user's previous items within the session gap (integer weights: order-free sums)
        -- sequential co-visitation: "after p, users went to item", counted when the user moves to another
        -- item within the session gap (a view->click->cart funnel on one item counts once). Each cv:{p}
        -- keeps its strongest `covis_cap` followers: the tail is trimmed when it grows past twice that.
        if ts - last <= gap and prev[1] ~= nil and prev[1] ~= item then
          local done = {}
          for i = 1, math.min(#prev, covis_n) do
            local p = prev[i]
            if p ~= item and not done[p] then
              done[p] = true
              local ck = P .. "cv:" .. enc(p)
              if tonumber(redis.call("ZINCRBY", ck, w, item)) == w and redis.call("ZCARD", ck) > 2 * covis_cap then
                redis.call("ZREMRANGEBYRANK", ck, 0, -covis_cap - 1)
              end
            end
          end
        end
        -- co-occurrence (the textbook symmetric co-visitation): an item new among the user's last `cooc_n`
        -- distinct items co-occurs once, both ways, with each of them, at any time gap. cs:{x} is trimmed
        -- like cv:{x}.
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
        if is_new then
          for i = 1, #last_distinct do
            local p = last_distinct[i]
            for _, pair in ipairs({{p, item}, {item, p}}) do
              local ck = P .. "cs:" .. enc(pair[1])
              if tonumber(redis.call("ZINCRBY", ck, 1, pair[2])) == 1 and redis.call("ZCARD", ck) > 2 * covis_cap then
                redis.call("ZREMRANGEBYRANK", ck, 0, -covis_cap - 1)
              end
            end
          end
        end
        -- trending: forward decay inside an epoch of 64 half-lives; two epochs back is < 2^-64, dropped
        -- an epoch key lives 3 epochs (wall clock) after its first write; by then it is negligible
        local epoch = math.floor(ts / EPOCH)
        local boost = w * math.pow(2, (ts - epoch * EPOCH) / trend_hl)
        local tk = P .. "tr:" .. epoch
        if tonumber(redis.call("ZINCRBY", tk, boost, item)) == boost then
          redis.call("PEXPIRE", tk, 3 * EPOCH, "NX")
        end
        if cat ~= "" then
          tk = P .. "tr:c:" .. enc(cat) .. ":" .. epoch
          if tonumber(redis.call("ZINCRBY", tk, boost, item)) == boost then
            redis.call("PEXPIRE", tk, 3 * EPOCH, "NX")
          end
          redis.call("ZINCRBY", P .. "pop:c:" .. enc(cat), w, item)
        end
        redis.call("ZINCRBY", P .. "pop", w, item)
      end
    end
  end
end
local aff = redis.call("HGETALL", AFF)
local bought = redis.call("ZREVRANGE", BOUGHT, 0, 19)
local u = redis.call("HMGET", U, "last_ts", "prev_ts", "last_type", "plog", "pn", "q")
return { table.concat(flags), redis.call("LRANGE", SEQ, 0, max_seq - 1), aff, bought,
         u[1] or "0", { u[2] or "0", u[3] or "", u[4] or "0", u[5] or "0", u[6] or "" } }
