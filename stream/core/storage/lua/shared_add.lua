-- Add a batch's increments to the shared statistics, once per input offset, for one or more shards.
-- Each shard's keys share its hash tag {s:NN} (one Redis Cluster slot): on a cluster a call carries one
-- shard, on a single Redis one call carries them all. Each shard has a guard, a hash: input partition -> the
-- newest offset whose increments this shard holds. An increment is added only if its event's offset is
-- newer than its shard's guard, so a batch redelivered after a crash (or written twice by a worker that lost
-- its partition) adds nothing twice.
-- KEYS: the guards (each also counts its shard's trims: field "trimmed") and the data keys (sorted sets)
-- ARGV: cap (a sorted set in mode "t" is cut back to its `cap` best when it holds more than 2 x cap),
--       ttl_ms (mode "e": expire ttl_ms after the first write), modes (a character per key: g for a guard,
--       t, e or -), the sections as one MessagePack array, flat: the guard (its index into KEYS), partition
--       ("" = none: no guard, as in a backtest), lo (the oldest offset among its increments), hi_inc (the
--       newest among them), hi_batch (the newest offset of the batch in that partition), n (its increments),
--       then n x (data key index into KEYS, member, amount), then the next section. (Measured: a JSON text
--       cost Redis 1.16x the time of this script; each increment as an argument of its own cost the worker
--       1.24x, python -m bench.store.)
-- Returns: {guard index, partition, guard, ...} for the sections refused because the guard lies inside their
--          range: the caller drops the increments at or below that guard and calls again.
local cap, ttl, modes = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local refused, touched = {}, {}
local A = cmsgpack.unpack(ARGV[4])
local b, nargs = 1, #A                     -- b: where a section starts
while b <= nargs do
  local gi, p, lo, hi_inc, hi_batch = A[b], A[b + 1], A[b + 2], A[b + 3], string.format("%d", A[b + 4])
  local G = KEYS[gi]
  local first = b + 6
  local after = first + 3 * A[b + 5]
  local g = -1
  if p ~= "" then g = tonumber(redis.call("HGET", G, p) or "-1") end
  if p == "" or g < lo then
    for j = first, after - 1, 3 do
      local k = A[j]
      redis.call("ZINCRBY", KEYS[k], string.format("%.17g", A[j + 2]), A[j + 1])
      touched[k] = gi
    end
    if p ~= "" then redis.call("HSET", G, p, hi_batch) end
  elseif g >= hi_inc then
    if g < tonumber(hi_batch) then redis.call("HSET", G, p, hi_batch) end
  else
    refused[#refused + 1] = gi
    refused[#refused + 1] = p
    refused[#refused + 1] = string.format("%d", g)
  end
  b = after
end
for k, gi in pairs(touched) do
  local mode = string.sub(modes, k, k)
  if mode == "t" then
    if redis.call("ZCARD", KEYS[k]) > 2 * cap then
      redis.call("ZREMRANGEBYRANK", KEYS[k], 0, -cap - 1)
      redis.call("HINCRBY", KEYS[gi], "trimmed", 1)    -- counted: which members a trim keeps depends on batch bounds
    end
  elseif mode == "e" then
    redis.call("PEXPIRE", KEYS[k], ttl, "NX")
  end
end
return refused
