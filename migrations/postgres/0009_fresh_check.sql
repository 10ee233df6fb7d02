-- Optimistic batches (docs/decisions.md, "Ordering, batching and durability"): a batch written without taking
-- its accounts' locks first checks, in its one statement, that every account it read is still at the version
-- it read. When one is not, this raises a serialization failure (SQLSTATE 40001), which rolls the statement
-- back and makes the writer run the batch again with locks.
CREATE OR REPLACE FUNCTION billing_fresh(ok boolean) RETURNS integer LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF ok IS NOT TRUE THEN
        RAISE EXCEPTION 'an account changed since this batch read it' USING ERRCODE = '40001';
    END IF;
    RETURN 0;
END
$$;
