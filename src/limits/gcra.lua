-- One shared rate-limit decision, atomic in Redis: the GCRA bucket of a key
-- and, when the policy has one, its brute-force lockout. Times are in
-- microseconds of the Redis server's clock, so nodes with skewed clocks agree.
--
-- KEYS[1]  the bucket: theoretical arrival time (TAT)
-- KEYS[2]  the lockout state: d = denials in the window, s = window start,
--          u = locked until, k = lockouts so far (strikes)
-- ARGV     interval, burst, lockout after (0 = none), lockout base, lockout max
-- Returns  {allowed (0/1), remaining, retry after, reset after, locked out (0/1)}

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local after = tonumber(ARGV[3])
local base = tonumber(ARGV[4])
local max = tonumber(ARGV[5])

-- Lua numbers are doubles; Redis would print large ones in %.14g and lose
-- microseconds.
local function int(x)
  return string.format('%d', x)
end

if after > 0 then
  local locked = tonumber(redis.call('HGET', KEYS[2], 'u') or 0)
  if locked > now then
    return {0, 0, locked - now, locked - now, 1}
  end
end

local capacity = interval * burst
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or 0), now)
local ahead = tat + interval - now
if ahead <= capacity then
  redis.call('SET', KEYS[1], int(tat + interval), 'PX', int(math.floor(ahead / 1000) + 1))
  return {1, math.floor((capacity - ahead) / interval), 0, ahead, 0}
end

local retry, reset = ahead - capacity, tat - now
local lockout = 0
if after > 0 then
  local s = redis.call('HMGET', KEYS[2], 'd', 's', 'u', 'k')
  local denials = tonumber(s[1] or 0)
  local start = tonumber(s[2] or now)
  local locked = tonumber(s[3] or 0)
  local strikes = tonumber(s[4] or 0)
  if locked ~= 0 and now > locked + max then
    strikes = 0
  end
  if now - start > base then
    denials = 0
    start = now
  end
  denials = denials + 1
  if denials >= after then
    local length = math.min(base * 2 ^ math.min(strikes, 32), math.max(max, base))
    strikes = strikes + 1
    denials = 0
    start = now
    locked = now + length
    retry, reset = length, length
    lockout = 1
  end
  redis.call('HSET', KEYS[2], 'd', int(denials), 's', int(start), 'u', int(locked), 'k', int(strikes))
  local keep = math.max(locked, start + base) + max - now
  redis.call('PEXPIRE', KEYS[2], int(math.floor(keep / 1000) + 1))
end
return {0, 0, retry, reset, lockout}
