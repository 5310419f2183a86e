# statesnap's genesis currency: balances and plain transfers, nothing more.
# xian-abci charges chi fees from `balances` and its CheckTx reads
# `currency.balances:<sender>`; wallets send `transfer(amount, to)`.

balances = Hash(default_value=0)
total_supply = Variable()


@construct
def seed(vk: str, supply: int = 1000000000):
    balances[vk] = supply
    total_supply.set(supply)


@export
def transfer(amount: float, to: str):
    assert amount > 0, "amount must be positive"
    assert len(to) > 0, "recipient missing"
    sender = ctx.caller
    assert balances[sender] >= amount, "balance too low"
    balances[sender] -= amount
    balances[to] += amount


@export
def balance_of(address: str):
    return balances[address]
