-- Write one user's profile, computed in the worker (stream/core/storage/update.py), if nobody wrote it
-- since the worker read it: the version check makes the read-compute-write atomic in effect (a second
-- worker holding the user after a rebalance, or a stale cache, gets 0 and reads the profile again).
-- KEYS: the user's hash U (fields v: version, b: the profile as MessagePack), U:seen (event id -> ts)
-- ARGV: the version read ("0" = none), the new version (a random token: a store rebuilt or restored never
--       shows a version a worker's stale copy could match by chance), the profile, how many of the oldest
--       seen ids to drop after adding, then (ts, event id) pairs of the events applied
-- Returns 1 (written) or 0 (the version moved: nothing written)
if (redis.call("HGET", KEYS[1], "v") or "0") ~= ARGV[1] then return 0 end
redis.call("HSET", KEYS[1], "v", ARGV[2], "b", ARGV[3])
if #ARGV > 4 then redis.call("ZADD", KEYS[2], unpack(ARGV, 5)) end
local drop = tonumber(ARGV[4])
if drop > 0 then redis.call("ZREMRANGEBYRANK", KEYS[2], 0, drop - 1) end
return 1
