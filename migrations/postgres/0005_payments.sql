-- A payment buys one package lot, in one account: two events about one payment can never grant twice.
CREATE UNIQUE INDEX lots_package_payment ON lots (id) WHERE source = 'package';
