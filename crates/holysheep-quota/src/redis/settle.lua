-- Reconciles a passed request: the arithmetic of gcra.rs (TenantState::settle).
-- KEYS[1]: the tenant's hash, {quota:TENANT}:state
-- ARGV: now_ms, tpm (< 0: not set), token_delta, usd, day, month, ttl_ms
local key = KEYS[1]
local now = tonumber(ARGV[1])
local tpm = tonumber(ARGV[2])
local delta = tonumber(ARGV[3])
local usd = tonumber(ARGV[4])
local day = ARGV[5]
local month = ARGV[6]
local ttl = tonumber(ARGV[7])
local MINUTE = 60000.0

if tpm > 0 and delta ~= 0 then
  local h = redis.call('HMGET', key, 'ttat', 'tlim')
  local tat = tonumber(h[1]) or 0
  local old = tonumber(h[2]) or 0
  if old ~= tpm and old > 0 and tat > now then
    tat = now + (tat - now) * old / tpm
  end
  tat = math.max(math.max(tat, now) + delta * MINUTE / tpm, now)
  redis.call('HSET', key, 'ttat', string.format('%.6f', tat), 'tlim', tpm)
end
if usd > 0 then
  local h = redis.call('HMGET', key, 'dwin', 'dspent', 'mwin', 'mspent')
  local d = 0
  if h[1] == day then d = tonumber(h[2]) or 0 end
  local m = 0
  if h[3] == month then m = tonumber(h[4]) or 0 end
  redis.call('HSET', key,
    'dwin', day, 'dspent', string.format('%.9f', d + usd),
    'mwin', month, 'mspent', string.format('%.9f', m + usd))
end
redis.call('PEXPIRE', key, ttl)
return 1
