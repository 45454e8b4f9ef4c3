-- A client lists only the orders it created, newest first: an index scan over its own orders,
-- however many orders other credentials have.
CREATE INDEX orders_creator_newest_idx ON orders.orders (created_by, create_time DESC, id DESC);
